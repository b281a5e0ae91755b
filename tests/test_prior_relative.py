"""local-loss prior-relative: a client offsets its logits by its own log label prior minus the federation's, so
the averaged model answers for the federation's prior and the server evaluates its plain logits."""

from __future__ import annotations

import numpy as np
import pytest

from fedrp.federation import FedConfig, local_train_config, round_prior
from fedrp.federation.local import prior_offsets
from fedrp.refusals import StateMismatch


def test_the_offsets_are_the_clients_log_prior_minus_the_federations():
    data = {"label": [0] * 30 + [1] * 10}
    shared = tuple(np.log([0.5, 0.5]).tolist())
    tilted = tuple(np.log([0.2, 0.8]).tolist())
    relative = local_train_config(FedConfig(local_loss="prior-relative"), data, 1, 0, label_prior=tilted)
    own = prior_offsets((30, 10))
    assert relative.logit_offsets == pytest.approx([own[0] - tilted[0], own[1] - tilted[1]])
    # Against a uniform federation it is the plain logit-adjusted loss up to a constant, which softmax ignores.
    uniform = local_train_config(FedConfig(local_loss="prior-relative"), data, 1, 0, label_prior=shared).logit_offsets
    assert np.ptp(np.subtract(uniform, own)) == pytest.approx(0.0, abs=1e-12)
    assert local_train_config(FedConfig(), data, 1, 0, label_prior=tilted).logit_offsets == pytest.approx(own)


def test_a_label_prior_that_does_not_fit_the_task_is_refused_and_dp_runs_refuse_the_loss():
    assert round_prior({}, 2) is None
    assert round_prior({"label-prior": [-0.1, -2.3]}, 2) == (-0.1, -2.3)
    for bad in ([-0.1], [-0.1, float("nan")], "x"):
        with pytest.raises(StateMismatch, match="label-prior"):
            round_prior({"label-prior": bad}, 2)
    with pytest.raises(ValueError, match="prior-relative needs the clients' label counts"):
        FedConfig(local_loss="prior-relative", dp_epsilon=8.0)
    assert FedConfig(local_loss="prior-relative").evaluation_prior((-0.1, -2.3)) is None
    assert FedConfig().evaluation_prior((-0.1, -2.3)) == (-0.1, -2.3)


def test_a_prior_relative_federation_sends_the_prior_and_is_evaluated_on_its_plain_logits(glue_dir, tmp_path,
                                                                                          monkeypatch):
    from clients.client_app import build_client_app
    from fedrp.federation import local, model_for, server_evaluate
    from server import checkpoint, rounds
    from server.server_app import build_server_app
    from simulations.inprocess import run_in_process

    trained_with, evaluated_with = [], []

    def spy(record: list, real, key: str):
        def wrapped(*args, **kwargs):
            record.append(kwargs.get(key, args[3] if key == "prior" and len(args) > 3 else None))
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(local, "local_train_config", spy(trained_with, local.local_train_config, "label_prior"))
    monkeypatch.setattr(rounds, "server_evaluate", spy(evaluated_with, rounds.server_evaluate, "prior"))

    overrides = {"task": "sst2", "local-loss": "prior-relative", "data-dir": str(glue_dir), "num-server-rounds": 2,
                 "max-train-samples": 96, "max-eval-samples": 64, "fraction-train": 1.0, "fraction-evaluate": 0.0,
                 "alpha": 0.1, "store": str(tmp_path / "runs.sqlite"), "checkpoint-dir": str(tmp_path / "ckpt"),
                 "bf16": "off"}
    results: list[dict] = []
    run_in_process(build_server_app(overrides, results), build_client_app(overrides), 3)
    (summary,) = results
    assert summary["status"] == "completed" and len(summary["label_prior"]) == 2
    assert len(trained_with) == 6 and all(np.exp(p) == pytest.approx(summary["label_prior"], abs=1e-4)
                                          for p in trained_with)  # every client round got the federation's prior
    assert evaluated_with == [None] * 3  # rounds 0, 1 and 2, on the plain logits
    _, state, _, _ = checkpoint.load(str(tmp_path / "ckpt" / f"run-{summary['run_id']}"))
    cfg = FedConfig.from_run_config({}, overrides)
    plain = server_evaluate(cfg, model_for(cfg), state)
    assert summary["rounds"][-1]["metrics"]["accuracy"] == plain["accuracy"]
