"""Adding a method is one class and its registration: toy methods defined only here (a baseline and a projected
adapter) train centrally, federate through the real ServerApp and ClientApp (in process), ship their trained
state, and the adapter exports and loads back as it predicted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedrp import methods
from fedrp.adapters import AdapterConfig, AdapterModel
from fedrp.backbone import Backbone, target_linears
from fedrp.baselines import BaselineModel
from fedrp.rates import Rates
from fedrp.spec import ModelSpec


class LastBiasModel(BaselineModel):
    """A method no module of fedrp knows: only the biases of the backbone's last layer train, with the head."""

    method = "last-bias"
    rates = Rates(centralized=1e-2, federated=1e-2)

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, spec: ModelSpec) -> nn.Module:
        model = backbone.model.requires_grad_(False)
        last = f"layer.{model.config.num_hidden_layers - 1}."
        for name, p in model.named_parameters():
            p.requires_grad_(last in name and name.endswith(".bias"))
        return model


@dataclasses.dataclass
class LastShiftConfig(AdapterConfig):
    method = "last-shift"
    rates = Rates(centralized=3e-2, federated=1.5e-2)

    @property
    def position(self) -> str:
        return "last-output"


class LastShiftModel(AdapterModel):
    """A projected adapter no module of fedrp knows: one shift z W_0, on the output Linear of the last block."""

    config_class = LastShiftConfig

    def shifted(self) -> nn.Linear:
        return target_linears(self.backbone, "output")[-1]

    def layer_widths(self) -> tuple[int, ...]:
        return (self.shifted().out_features,)

    def attach(self) -> list:
        return [self.shifted().register_forward_hook(lambda m, a, out: out + self.vector(0).to(out.dtype))]

    def add_at_entries(self, extra) -> list:
        return [self.shifted().register_forward_hook(lambda m, a, out: out + extra(out))]

    @torch.no_grad()
    def prepare_export(self, out: Path) -> dict:
        shift = self.vector(0).float()
        self.detach_layers()
        self.shifted().bias.add_(shift)
        return {}


@pytest.fixture(params=[LastBiasModel, LastShiftModel], ids=["baseline", "adapter"])
def registered(request):
    from fedrp.spec import ModelOptions

    ModelOptions(method="slash")  # the allowed methods were read before this one registers
    model = methods.register_method(request.param)
    yield model.method
    del methods.METHODS[model.method], methods.RATES[model.method]


def test_a_method_registers_once_and_is_listed_and_refused_dp_by_name(registered):
    from fedrp.spec import ModelOptions

    assert ModelOptions(method=registered).method == registered  # the options' allowed values read the registry
    with pytest.raises(ValueError, match="registered already"):
        methods.register_method(methods.METHODS[registered])
    if registered == "last-bias":
        with pytest.raises(ValueError, match="DP training supports slash, jrwarp, head, lora; got 'last-bias'"):
            methods.check_private(registered)
    else:
        methods.check_private(registered)  # an adapter's exact per-sample rule comes with its entry hooks
    with pytest.raises(ValueError, match="method must be one of"):
        ModelOptions(method="unregistered")


def test_a_registered_method_trains_federates_and_ships_its_state(registered, glue_dir, tmp_path):
    from clients.client_app import build_client_app
    from fedrp.backbone import load_backbone
    from fedrp.centralized import RunConfig, run
    from fedrp.payload import trainable_state
    from server import checkpoint
    from server.server_app import build_server_app
    from simulations.inprocess import run_in_process

    central = run(RunConfig(task="sst2", method=registered, data_dir=str(glue_dir), max_train_samples=64,
                            max_eval_samples=64, out=str(tmp_path), progress=False, bf16="off"))
    if registered == "last-bias":
        biases = 6 * 384 + 1536 + 384  # the last layer's attention (q, k, v, out, 2 norms), FFN and output biases
        assert central["params"] == biases + 2 * 384 + 2 and central["lr"] == 1e-2
        assert central["artifact"] is None  # a baseline writes no adapter file
    else:
        assert central["params"] == 1024 + 2 * 384 + 2 and central["lr"] == 3e-2
        _exports_as_it_predicts(central["artifact"], tmp_path / "exported")

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


def _exports_as_it_predicts(adapter: str, out: Path) -> None:
    """The trained adapter file exports to a plain backbone (the shift folded into a bias) that predicts alike."""
    from fedrp import artifact
    from fedrp.export import export, load_exported
    from fedrp.predict import predict
    from tests.conftest import PAIRS, TEXTS

    model, art = artifact.load_model(adapter)
    exported = load_exported(export(adapter, out))
    assert type(exported).__name__ == "Classifier" and exported.info["method"] == "last-shift"
    for x, y in zip(predict(model, art.label_names, TEXTS, PAIRS), predict(exported, exported.label_names, TEXTS, PAIRS)):
        assert x["label"] == y["label"] and x["logits"] == pytest.approx(y["logits"], abs=1e-5)
