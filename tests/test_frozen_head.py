"""frozen-head etf: a fixed simplex equiangular tight frame as the head (FedETF), so only z (or a baseline's
weights) trains and nothing of the head moves with each round's label-skewed clients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrp.methods import build, check_frozen_head
from fedrp.spec import ModelSpec


@pytest.mark.parametrize("classes", [2, 3])
def test_the_head_is_an_equiangular_tight_frame_that_does_not_train(default_backbone, classes):
    model = build(ModelSpec(method="slash", d=64, num_labels=classes, frozen_head="etf"), default_backbone)
    try:
        w = model.head.weight.detach().double()
        gram = w @ w.T
        assert torch.diag(gram) == pytest.approx(torch.ones(classes, dtype=torch.float64), abs=1e-6)  # unit rows
        off = gram[~torch.eye(classes, dtype=torch.bool)]
        assert off == pytest.approx(torch.full_like(off, -1 / (classes - 1)), abs=1e-6)  # equal, maximal angles
        assert model.head.bias.abs().max() == 0 and set(model.trainable_parameters()) == {"z"}
    finally:
        model.detach_layers()


def test_every_device_builds_the_same_frame_from_the_seed_and_the_payload_keeps_it(default_backbone):
    from fedrp.payload import trainable_state

    heads = []
    for seed in (0, 0, 1):
        model = build(ModelSpec(method="slash", d=64, seed=seed, frozen_head="etf"), default_backbone)
        heads.append(trainable_state(model)["head.weight"])
        model.detach_layers()
    assert np.array_equal(heads[0], heads[1]) and not np.array_equal(heads[0], heads[2])
    from fedrp.backbone import load_backbone

    lora = build(ModelSpec(method="lora", frozen_head="etf"), load_backbone())  # PEFT wraps its own copy
    assert not any(name.startswith("head") for name in lora.trainable_parameters())
    assert not any(name.startswith("head") for name in trainable_state(lora))  # a baseline sends what trains


def test_a_frozen_head_is_refused_where_it_cannot_be():
    check_frozen_head("none", 1, 0.5)
    check_frozen_head("etf", 2)
    with pytest.raises(ValueError, match="needs a classification task"):
        check_frozen_head("etf", 1)
    with pytest.raises(ValueError, match="no share of the clipping norm"):
        check_frozen_head("etf", 2, 0.5)
    from fedrp.federation import FedConfig

    with pytest.raises(ValueError, match="needs a classification task"):
        FedConfig(task="stsb", frozen_head="etf")


def test_a_federation_with_a_frozen_head_trains_z_and_keeps_the_frame(glue_dir, tmp_path):
    from clients.client_app import build_client_app
    from fedrp.federation import FedConfig, initial_state
    from server import checkpoint
    from server.server_app import build_server_app
    from simulations.inprocess import run_in_process

    overrides = {"task": "sst2", "frozen-head": "etf", "data-dir": str(glue_dir), "num-server-rounds": 2,
                 "max-train-samples": 96, "max-eval-samples": 32, "fraction-evaluate": 0.0, "alpha": 0.1,
                 "store": str(tmp_path / "runs.sqlite"), "checkpoint-dir": str(tmp_path / "ckpt"), "bf16": "off"}
    results: list[dict] = []
    run_in_process(build_server_app(overrides, results), build_client_app(overrides), 3)
    (summary,) = results
    assert summary["status"] == "completed"
    _, state, _, _ = checkpoint.load(str(tmp_path / "ckpt" / f"run-{summary['run_id']}"))
    start = initial_state(FedConfig.from_run_config({}, overrides))
    assert np.array_equal(state["head.weight"], start["head.weight"]) and not np.array_equal(state["z"], start["z"])


def test_dp_sgd_trains_z_alone_under_a_frozen_head(default_backbone, glue_dir):
    from fedrp import data
    from fedrp.privacy.config import PrivacyConfig
    from fedrp.privacy.engine import train_private
    from fedrp.train import TrainConfig

    examples = data.subset(data.load_tokenized("sst2", "train", default_backbone.tokenizer, data_dir=glue_dir), 64)
    model = build(ModelSpec(method="slash", d=64, frozen_head="etf"), default_backbone)
    try:
        head, z = model.head.weight.detach().clone(), model.z.detach().clone()
        result = train_private(model, examples, TrainConfig(lr=0.05, batch_size=16, bf16="off", progress=False),
                               PrivacyConfig(epsilon=8.0), torch.device("cpu"))
        assert result.privacy["epsilon"] <= 8.0
        assert torch.equal(model.head.weight, head) and not torch.equal(model.z.detach(), z)
    finally:
        model.detach_layers()
