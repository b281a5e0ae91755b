"""Adding a method is one class and its registration: a toy method defined only here trains centrally,
federates through the real ServerApp and ClientApp (in process), and ships its trained state."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from fedrp import methods
from fedrp.backbone import Backbone
from fedrp.baselines import BaselineModel
from fedrp.rates import Rates


class LastBiasModel(BaselineModel):
    """A method no module of fedrp knows: only the biases of the backbone's last layer train, with the head."""

    method = "last-bias"
    rates = Rates(centralized=1e-2, federated=1e-2)

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, lora_rank: int, seed: int) -> nn.Module:
        model = backbone.model.requires_grad_(False)
        last = f"layer.{model.config.num_hidden_layers - 1}."
        for name, p in model.named_parameters():
            p.requires_grad_(last in name and name.endswith(".bias"))
        return model


@pytest.fixture
def registered():
    from fedrp.spec import ModelOptions

    ModelOptions(method="slash")  # the allowed methods were read before this one registers
    methods.register_method(LastBiasModel)
    yield "last-bias"
    del methods.METHODS["last-bias"], methods.RATES["last-bias"]


def test_a_method_registers_once_and_is_listed_and_refused_dp_by_name(registered):
    from fedrp.spec import ModelOptions

    assert ModelOptions(method=registered).method == registered  # the options' allowed values read the registry
    with pytest.raises(ValueError, match="registered already"):
        methods.register_method(LastBiasModel)
    with pytest.raises(ValueError, match="DP training supports slash, jrwarp, head, lora; got 'last-bias'"):
        methods.check_private(registered)
    with pytest.raises(ValueError, match="method must be one of"):
        ModelOptions(method="unregistered")


def test_a_registered_method_trains_federates_and_ships_its_state(registered, glue_dir, tmp_path):
    from clients.client_app import build_client_app
    from fedrp.backbone import load_backbone
    from fedrp.centralized import RunConfig, run
    from fedrp.payload import trainable_state
    from fedrp.spec import ModelSpec
    from server import checkpoint
    from server.server_app import build_server_app
    from simulations.inprocess import run_in_process

    central = run(RunConfig(task="sst2", method=registered, data_dir=str(glue_dir), max_train_samples=64,
                            max_eval_samples=64, out=None, progress=False, bf16="off"))
    biases = 6 * 384 + 1536 + 384  # the last layer's attention (q, k, v, out, 2 norms), FFN and output biases
    assert central["params"] == biases + 2 * 384 + 2 and central["lr"] == 1e-2

    overrides = {"task": "sst2", "method": registered, "data-dir": str(glue_dir), "num-server-rounds": 2,
                 "max-train-samples": 96, "max-eval-samples": 64, "store": str(tmp_path / "runs.sqlite"),
                 "checkpoint-dir": str(tmp_path / "ckpt"), "bf16": "off"}
    results: list[dict] = []
    run_in_process(build_server_app(overrides, results), build_client_app(overrides), 3)
    (summary,) = results
    assert summary["status"] == "completed" and [r["accepted"] for r in summary["rounds"][1:]] == [2, 2]
    _, state, _, meta = checkpoint.load(str(tmp_path / "ckpt" / f"run-{summary['run_id']}"))
    assert meta["method"] == registered and sum(v.size for v in state.values()) == central["params"]
    start = trainable_state(methods.build(ModelSpec(method=registered, num_labels=2), load_backbone()))
    assert set(start) == set(state) and any(not np.array_equal(start[k], state[k]) for k in state)  # it trained
