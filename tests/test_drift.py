"""SCAFFOLD, FedDyn and FedProx by their defining properties, on small quadratic problems as in their papers:
client i minimises f_i(w) = a_i/2 ||w - b_i||^2, and the federation's optimum is sum a_i b_i / sum a_i.

The client's side is fedrp.drift.Correction as fedrp.train applies it; the server's is server.drift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrp.drift import Correction
from server.drift import ControlVariates, DynamicRegularizer

A = np.array([1.0, 4.0, 0.5])  # curvatures: unequal, so local steps drift towards each client's own optimum
B = np.array([[2.0, -1.0], [-1.0, 3.0], [4.0, 0.5]])
OPTIMUM = (A[:, None] * B).sum(0) / A.sum()


def _local(i: int, w: np.ndarray, steps: int, lr: float, correction: Correction | None = None) -> np.ndarray:
    """Plain SGD on f_i from w, with the correction applied to each step's gradient as fedrp.train does."""
    p = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (A[i] / 2 * (p - torch.tensor(B[i])).square().sum()).backward()
        if correction is not None:
            correction.apply({"w": p})
        opt.step()
    return p.detach().numpy()


def _fedavg(rounds: int, steps: int, lr: float) -> np.ndarray:
    w = np.zeros(2)
    for _ in range(rounds):
        w = np.mean([_local(i, w, steps, lr) for i in range(len(A))], axis=0)
    return w


def test_scaffold_reaches_the_federations_optimum_where_fedavgs_local_steps_drift():
    steps, lr = 10, 0.1
    variates = ControlVariates(num_clients=len(A))
    w = np.zeros(2)
    for _ in range(150):
        replies, trained = [], []
        for i in range(len(A)):
            correction = Correction(linear={k: torch.from_numpy(v).double() for k, v in
                                            variates.correction(i, {"w": w}).items()}, record=True)
            trained.append(_local(i, w, steps, lr, correction))
            replies.append((i, {"w": correction.mean_gradient()["w"].numpy()}))
        variates.update(replies)
        w = np.mean(trained, axis=0)  # the server's step: the mean of the clients' models (global rate 1)
    drifted = _fedavg(150, steps, lr)
    assert np.linalg.norm(drifted - OPTIMUM) > 0.1  # FedAvg settles elsewhere: the effect SCAFFOLD removes
    assert np.linalg.norm(w - OPTIMUM) < 1e-5
    # Its control variates are the clients' gradients at the optimum, and c is their mean.
    for i in range(len(A)):
        assert variates.clients[i]["w"] == pytest.approx(A[i] * (OPTIMUM - B[i]), abs=1e-4)
    assert variates.shared["w"] == pytest.approx(np.mean([variates.clients[i]["w"] for i in range(3)], axis=0))


def test_scaffold_takes_a_clients_mean_gradient_as_its_c_i_and_moves_c_by_the_changes_over_all_clients():
    variates = ControlVariates(num_clients=4)
    variates.update([(0, {"w": np.array([4.0])}), (2, {"w": np.array([-2.0])})])
    assert variates.shared["w"] == pytest.approx([0.5])  # (4 - 2) / 4 clients, not / 2 replies
    assert variates.correction(0, {"w": np.zeros(1)})["w"] == pytest.approx([0.5 - 4.0])
    assert variates.correction(3, {"w": np.zeros(1)})["w"] == pytest.approx([0.5])  # not yet trained: c_i = 0
    variates.update([(0, {"w": np.array([1.0])})])
    assert variates.shared["w"] == pytest.approx([0.5 + (1.0 - 4.0) / 4])

    correction = Correction(record=True)
    p = torch.nn.Parameter(torch.zeros(2))
    for g in ([1.0, 2.0], [3.0, -2.0]):
        p.grad = torch.tensor(g)
        correction.apply({"w": p})
    assert correction.mean_gradient()["w"].tolist() == [2.0, 0.0]


def test_feddyn_keeps_each_clients_gradient_at_its_local_optimum_and_reaches_the_federations_optimum():
    alpha = 0.5
    dyn = DynamicRegularizer(alpha, num_clients=len(A))
    w = np.zeros(2)
    for _ in range(60):
        replies = []
        for i in range(len(A)):
            linear = {k: torch.from_numpy(v).double() for k, v in dyn.linear(i, {"w": w}).items()}
            correction = Correction(linear=linear, proximal=alpha, anchor={"w": torch.tensor(w)})
            replies.append((i, {"w": _local(i, w, 400, 0.1, correction)}))  # solved to its optimum
        sent = {"w": w}
        w = dyn.update(sent, replies)["w"].astype(np.float64)
        for i, weights in replies:  # the linear correction term: g_i is the gradient of f_i where client i ended
            assert dyn.clients[i]["w"] == pytest.approx(A[i] * (weights["w"] - B[i]), abs=1e-6)
    assert np.linalg.norm(w - OPTIMUM) < 1e-5


def test_the_proximal_term_pulls_a_clients_optimum_towards_the_global_weights():
    mu, anchor = 2.0, np.array([10.0, 10.0])
    correction = Correction(proximal=mu, anchor={"w": torch.tensor(anchor)})
    w = _local(1, anchor, 500, 0.1, correction)
    assert w == pytest.approx((A[1] * B[1] + mu * anchor) / (A[1] + mu), abs=1e-8)


def test_state_round_trips_through_a_checkpoint():
    variates = ControlVariates(num_clients=3)
    variates.update([(0, {"w": np.array([1.0, 2.0])}), (7, {"w": np.array([3.0, 4.0])})])
    again = ControlVariates(num_clients=3)
    again.load(variates.state())
    assert again.correction(7, {"w": np.zeros(2)})["w"].tolist() == variates.correction(7, {"w": np.zeros(2)})["w"].tolist()
    dyn = DynamicRegularizer(0.1, num_clients=2)
    dyn.update({"w": np.zeros(1)}, [(1, {"w": np.ones(1)})])
    restored = DynamicRegularizer(0.1, num_clients=2)
    restored.load(dyn.state())
    assert restored.shared["w"].tolist() == dyn.shared["w"].tolist() and restored.linear(1, {"w": np.zeros(1)})["w"] == 0.1


def test_a_client_refuses_a_drift_vector_or_proximal_weight_that_does_not_fit_the_round():
    from fedrp.federation import round_correction
    from fedrp.refusals import StateMismatch

    sent = {"z": np.zeros(4, np.float32), "head.bias": np.zeros(2, np.float32)}
    assert round_correction({}, None, sent) is None  # FedAvg's round: nothing added
    ok = round_correction({"proximal-mu": 0.1, "record-gradient": True}, {k: v + 1 for k, v in sent.items()}, sent)
    assert ok.proximal == 0.1 and ok.record and ok.linear["z"].tolist() == [1.0] * 4
    for config, drift, message in [
        ({}, {"z": np.zeros(3, np.float32), "head.bias": np.zeros(2, np.float32)}, "drift vector: z has shape"),
        ({}, {"z": np.full(4, np.nan, np.float32), "head.bias": np.zeros(2, np.float32)}, "non-finite"),
        ({}, {"z": np.zeros(4, np.float32)}, "missing"),
        ({"proximal-mu": -1.0}, None, "proximal-mu is -1.0; expected a number of at least 0"),
        ({"proximal-mu": "nan"}, None, "proximal-mu is 'nan'"),
    ]:
        with pytest.raises(StateMismatch, match=message):
            round_correction(config, drift, sent)


@pytest.mark.parametrize("aggregation", ["scaffold", "feddyn", "fedprox", "fedyogi"])
def test_each_rule_federates_through_the_real_apps_and_checkpoints_its_server_state(aggregation, glue_dir, tmp_path):
    from clients.client_app import build_client_app
    from server import checkpoint
    from server.server_app import build_server_app
    from simulations.inprocess import run_in_process

    overrides = {"task": "sst2", "aggregation": aggregation, "data-dir": str(glue_dir), "num-server-rounds": 2,
                 "max-train-samples": 96, "max-eval-samples": 32, "fraction-train": 1.0, "fraction-evaluate": 0.0,
                 "store": str(tmp_path / "runs.sqlite"), "checkpoint-dir": str(tmp_path / "ckpt"), "bf16": "off",
                 "feddyn-alpha": 0.1, "proximal-mu": 0.1, "server-lr": 0.01}
    results: list[dict] = []
    run_in_process(build_server_app(overrides, results), build_client_app(overrides), 3)
    (summary,) = results
    assert summary["status"] == "completed" and [r["accepted"] for r in summary["rounds"][1:]] == [3, 3]
    payload = 1024 * 4 + (2 * 384 + 2) * 4  # z and the head, float32
    sent_up = summary["rounds"][-1]["bytes_up_accepted"] / 3
    assert sent_up == (2 * payload if aggregation == "scaffold" else payload)  # SCAFFOLD's gradient travels too
    _, _, server_state, _ = checkpoint.load(str(tmp_path / "ckpt" / f"run-{summary['run_id']}"))
    expected = {"scaffold": {"scaffold/c/z", "scaffold/client-0/z", "scaffold/client-2/head.bias"},
                "feddyn": {"feddyn/h/z", "feddyn/client-1/z"}, "fedyogi": {"m_t/z", "v_t/z"}, "fedprox": set()}
    assert expected[aggregation] <= set(server_state)
    from server.store import RunStore

    replies = [r for r in RunStore.open_readonly(tmp_path / "runs.sqlite").replies(summary["run_id"])
               if r["kind"] == "train" and r["round"] == 2]
    assert len(replies) == 3 and all(r["norm_vector"] > 0 and -1 <= r["cosine"] <= 1 for r in replies)
    assert sum(r["weight"] for r in replies) == pytest.approx(1.0)  # each accepted reply's share of the aggregate


def test_the_training_loop_adds_the_terms_to_every_step_and_records_the_data_gradients(default_backbone, glue_dir):
    """fedrp.train applies a Correction at each optimizer step: a linear term of +1 on z moves z down by about
    lr per step (plain SGD's step, the data gradient clipped to norm 1 beside it), and the recorded mean is
    the data gradient alone."""
    from fedrp import data
    from fedrp.methods import build
    from fedrp.spec import ModelSpec
    from fedrp.train import TrainConfig, train

    examples = data.subset(data.load_tokenized("sst2", "train", default_backbone.tokenizer, data_dir=glue_dir), 32)
    shifts = {}
    for name, linear in (("plain", None), ("linear", 1.0)):
        model = build(ModelSpec(method="slash", d=64), default_backbone)
        start = model.z.detach().clone()
        terms = {k: torch.full_like(p, linear) for k, p in model.trainable_parameters().items()} if linear else None
        correction = Correction(linear=terms, record=True)
        result = train(model, examples, TrainConfig(lr=0.01, optimizer="sgd", batch_size=8, warmup_ratio=0.0,
                                                     schedule="constant", bf16="off", progress=False,
                                                     correction=correction))
        shifts[name] = float((model.z.detach() - start).mean())
        model.detach_layers()  # the shared backbone takes the next adapter
        mean = correction.mean_gradient()
        assert set(mean) == {"z", "head.weight", "head.bias"} and float(mean["z"].norm()) <= 1.0 + 1e-6
    assert result.steps == 4
    # SGD with momentum 0.9 over 4 steps: the +1 term alone moves each entry by -0.01 (1 + 1.9 + 2.71 + 3.439).
    assert shifts["linear"] - shifts["plain"] == pytest.approx(-0.01 * 9.049, rel=2e-2)


def test_under_dp_sgd_the_terms_are_added_to_the_private_gradient_and_the_recorded_one_is_private(default_backbone,
                                                                                                  glue_dir):
    """DP-SGD applies the correction between Opacus's noising and the optimizer's step: the recorded gradient
    (SCAFFOLD's c_i, which leaves the client) is the noised one, so its norm follows the noise, and the linear
    term moves z as without DP."""
    from fedrp import data
    from fedrp.methods import build
    from fedrp.privacy.config import PrivacyConfig
    from fedrp.privacy.engine import train_private
    from fedrp.spec import ModelSpec
    from fedrp.train import TrainConfig

    examples = data.subset(data.load_tokenized("sst2", "train", default_backbone.tokenizer, data_dir=glue_dir), 64)
    norms, shifts = {}, {}
    for noise, linear in ((0.01, None), (100.0, None), (0.01, 1.0)):
        model = build(ModelSpec(method="slash", d=64), default_backbone)
        start = model.z.detach().clone()
        terms = {k: torch.full_like(p, linear) for k, p in model.trainable_parameters().items()} if linear else None
        correction = Correction(linear=terms, record=True)
        train_private(model, examples, TrainConfig(lr=0.01, optimizer="sgd", batch_size=16, bf16="off",
                                                   schedule="constant", warmup_ratio=0.0, progress=False,
                                                   correction=correction),
                      PrivacyConfig(epsilon=8.0, noise_multiplier=noise), torch.device("cpu"))
        norms[noise, linear] = float(correction.mean_gradient()["z"].norm())
        shifts[noise, linear] = float((model.z.detach() - start).mean())
        model.detach_layers()
    assert norms[100.0, None] > 50 * norms[0.01, None]  # recorded after the noise: the private gradient
    assert shifts[0.01, 1.0] - shifts[0.01, None] < -0.05  # the +1 term pulled every entry of z down


@pytest.mark.parametrize("aggregation", ["scaffold", "feddyn"])
def test_a_resumed_strategy_sends_each_client_the_vector_the_uninterrupted_one_would(aggregation):
    from fedrp.federation import FedConfig
    from server.strategy import make_strategy

    cfg = FedConfig(aggregation=aggregation, fraction_train=1.0, fraction_evaluate=0.0)
    sent = {"z": np.zeros(3, np.float32)}
    strategy = make_strategy(cfg)
    strategy.prepare({10: 0, 11: 1}, 0, None, 0.0)
    if aggregation == "scaffold":
        strategy.held.update([(0, {"z": np.array([1.0, 2.0, 3.0])})])
    else:
        strategy.held.update(sent, [(1, {"z": np.array([1.0, 0.0, -1.0], np.float32)})])
    resumed = make_strategy(cfg)
    resumed.load_server_state(strategy.server_state())
    resumed.prepare({10: 0, 11: 1}, 0, None, 0.0)
    for key in (0, 1):
        assert resumed.own_term(key, sent)["z"].tolist() == strategy.own_term(key, sent)["z"].tolist()
    assert any(np.any(strategy.own_term(key, sent)["z"]) for key in (0, 1))
