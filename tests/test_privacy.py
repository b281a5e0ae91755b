"""Differential privacy: exact per-sample gradients of z and the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrp.inputs import batch_inputs
from fedrp.methods import build
from fedrp.privacy.budget import BudgetExhausted
from fedrp.privacy.config import PrivacyConfig
from fedrp.privacy.grad_sample import per_sample_gradients
from fedrp.spec import ModelSpec
from tests.conftest import PAIRS, TEXTS, TINY_CONFIGS

TEXTS4 = [*TEXTS, "an utterly forgettable, overlong and lifeless picture"]


def _ce(logits, labels):
    return torch.nn.functional.cross_entropy(logits.float() if logits.dtype == torch.bfloat16 else logits, labels,
                                             reduction="none")


def _one_by_one(model, batch, labels, offsets=None, keep_padding=False):
    """The reference: a batch of one example at a time, plain autograd."""
    out = []
    for i in range(len(labels)):
        single = {k: v[i:i + 1] for k, v in batch.items()}
        if not keep_padding:  # as if alone
            length = int(single["attention_mask"].sum())
            single = {k: v[:, :length] for k, v in single.items()}
        model.zero_grad(set_to_none=True)
        logits = model(**single)
        if offsets is not None:
            logits = logits + offsets
        _ce(logits, labels[i:i + 1]).sum().backward()
        out.append({k: p.grad.detach().clone() for k, p in model.trainable_parameters().items()})
    return {k: torch.stack([o[k] for o in out]) for k in out[0]}


def _random_state(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("method, position", [("slash", "output"), ("slash", "intermediate"), ("slash", "attention"),
                                              ("jrwarp", "output")])
@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_per_sample_gradients_equal_batches_of_one_in_float64(tiny_backbone, default_tokenizer, method, position,
                                                              family):
    model = build(ModelSpec(method=method, d=48, position=position), tiny_backbone(family)).double()
    _random_state(model, 0)
    batch = batch_inputs(default_tokenizer, TEXTS4)  # four lengths: real padding in the batch
    labels = torch.tensor([1, 0, 1, 0])
    offsets = torch.tensor([-0.3, -1.2], dtype=torch.float64)
    grads, losses = per_sample_gradients(model, batch, labels, _ce, offsets)
    reference = _one_by_one(model, batch, labels, offsets)
    assert set(grads) == set(reference) == {"z", "head.weight", "head.bias"}
    for k in grads:
        assert grads[k].shape == reference[k].shape
        torch.testing.assert_close(grads[k], reference[k], rtol=0, atol=1e-10)
    assert losses.shape == (4,)


@pytest.mark.parametrize("method", ["slash", "jrwarp"])
def test_per_sample_gradients_on_the_real_backbone_in_float32(default_backbone, default_tokenizer, method):
    model = build(ModelSpec(method=method), default_backbone)
    _random_state(model, 1)
    batch = batch_inputs(default_tokenizer, TEXTS4[:3], PAIRS)
    labels = torch.tensor([1, 0, 1])
    grads, _ = per_sample_gradients(model, batch, labels, _ce)
    reference = _one_by_one(model, batch, labels)
    for k in grads:
        scale = reference[k].abs().max()
        assert scale > 0
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-5, atol=1e-5 * float(scale))


@pytest.mark.parametrize("method", ["head", "lora"])
def test_baselines_get_opacus_per_sample_gradients_equal_to_batches_of_one(default_backbone, default_tokenizer, method):
    from fedrp.privacy.grad_sample import per_sample_engine, rule_for

    model = build(ModelSpec(method=method), default_backbone)
    for m in model.modules():  # dropout off, training mode kept (Opacus records activations only in training)
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with pytest.raises(TypeError, match="no exact per-sample gradient rule for (HeadModel|LoRAModel)"):
        rule_for(model)
    _random_state(model, 2)
    batch = batch_inputs(default_tokenizer, TEXTS4[:3], PAIRS)
    labels = torch.tensor([1, 0, 1])
    with per_sample_engine(model) as per_sample:
        grads, _ = per_sample(batch, labels, _ce)
    assert set(grads) == set(model.trainable_parameters())
    reference = _one_by_one(model, batch, labels, keep_padding=True)  # after the engine's hooks are gone
    # Some LoRA matrices get gradients 1000x smaller than others: float32 noise is judged against the largest.
    scale = max(float(r.abs().max()) for r in reference.values())
    for k in grads:
        torch.testing.assert_close(grads[k], reference[k], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["bitfit", "full"])
def test_dp_refuses_the_baselines_it_cannot_do(default_backbone, method):
    from fedrp.privacy.grad_sample import per_sample_engine

    engine = per_sample_engine(build(ModelSpec(method=method), default_backbone))
    with pytest.raises(ValueError, match="DP training supports slash, jrwarp, head, lora; got"):
        engine.__enter__()


@pytest.fixture(scope="module")
def sst2_slice(glue_dir, default_tokenizer):
    from fedrp import data

    return data.subset(data.load_tokenized("sst2", "train", default_tokenizer, data_dir=glue_dir), 256)


def test_dp_training_spends_the_budget_it_was_given(default_backbone, sst2_slice):
    from fedrp.privacy.config import PrivacyConfig
    from fedrp.privacy.engine import train_private
    from fedrp.train import TrainConfig

    model = build(ModelSpec(method="slash"), default_backbone)
    z0 = model.z.detach().clone()
    cfg = TrainConfig(lr=1e-2, batch_size=32, epochs=2, bf16="off", progress=False)
    result = train_private(model, sst2_slice, cfg, PrivacyConfig(epsilon=3.0), torch.device("cpu"))
    p = result.privacy
    assert p["delta"] == pytest.approx(1 / 512) and p["sample_rate"] == pytest.approx(32 / 256)
    assert p["steps"] == result.steps == 16 and p["accountant"] == "rdp" and p["max_grad_norm"] == 1.0
    assert 0.95 * 3.0 <= p["epsilon"] <= 3.0  # calibrated: spends close to, never over, the target
    assert p["noise_multiplier"] > 0.5
    assert not torch.equal(model.z.detach(), z0) and torch.isfinite(model.z).all()


def test_dp_settings_are_checked(default_backbone, sst2_slice):
    from fedrp.privacy.config import PrivacyConfig
    from fedrp.privacy.engine import train_private
    from fedrp.train import TrainConfig

    with pytest.raises(ValueError, match="epsilon must be positive"):
        PrivacyConfig(epsilon=0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        PrivacyConfig(epsilon=1, delta=2)
    with pytest.raises(ValueError, match="accountant must be one of"):
        PrivacyConfig(epsilon=1, accountant="gdp-ish")
    with pytest.raises(ValueError, match="set grad_accum to 1"):
        train_private(build(ModelSpec(method="slash"), default_backbone), sst2_slice, TrainConfig(grad_accum=2), PrivacyConfig(epsilon=1))


def test_a_client_budget_lasts_the_planned_rounds_and_then_refuses():
    from fedrp.privacy.budget import BudgetExhausted, ClientBudget
    from fedrp.privacy.config import PrivacyConfig

    budget = ClientBudget(PrivacyConfig(epsilon=2.0))
    delta, rate, steps = 1e-3, 0.1, 10
    noise = budget.noise_for_rounds(delta, rate, steps, rounds=3)
    for _ in range(3):
        budget.check(delta, noise, rate, steps)
        budget.history.append((noise, rate, steps))
    assert 1.9 <= budget.spent(delta) <= 2.0
    with pytest.raises(BudgetExhausted, match="privacy budget exhausted: spent epsilon 1.9.* of 2"):
        budget.check(delta, noise, rate, steps)
    again = ClientBudget.from_lists(budget.config, budget.to_lists())
    assert again.history == budget.history and again.spent(delta) == budget.spent(delta)


def test_a_client_budget_file_survives_the_run_and_starts_empty_when_absent(tmp_path):
    from fedrp.privacy.budget import ClientBudget
    from fedrp.privacy.config import PrivacyConfig

    config = PrivacyConfig(epsilon=2.0)
    path = tmp_path / "node" / "dp-budget-abc-3.json"
    assert ClientBudget.load(config, path).history == []
    budget = ClientBudget(config, [(1.1, 0.1, 10), (1.1, 0.1, 12)])
    budget.save(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # written through a temporary file, then renamed
    assert ClientBudget.load(config, path).history == budget.history


def test_federated_dp_rounds_accumulate_one_clients_epsilon(glue_dir):
    from fedrp.federation import FedConfig, client_train_data, initial_state, local_train, model_for
    from fedrp.privacy.budget import ClientBudget

    cfg = FedConfig(data_dir=str(glue_dir), dp_epsilon=3.0, num_server_rounds=2, max_train_samples=400,
                    max_train_samples_per_client=64, batch_size=32, bf16="off")
    data = client_train_data(cfg, model_for(cfg).tokenizer, 0, 4)
    budget = ClientBudget(cfg.privacy)
    state = initial_state(cfg)
    spent = []
    for rnd in (1, 2):
        state, metrics = local_train(cfg, state, data, rnd, 0, device="cpu", budget=budget)
        spent.append(metrics["epsilon"])
    assert 0 < spent[0] < spent[1] <= 3.0 and spent[1] > 2.7
    # 2 rounds of 2 Poisson steps (64/32), after the one release of the label counts (a step at sample rate 1)
    assert metrics["dp-steps"] == 5 and metrics["noise-multiplier"] > 0 and budget.history[0] == (10.0, 1.0, 1)
    with pytest.raises(ValueError, match="dp-epsilon must be 0"):
        FedConfig(dp_epsilon=-1.0)
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        FedConfig(dp_epsilon=1.0, dp_max_grad_norm=0.0)


@pytest.mark.parametrize("noise, rate, steps", [(0.8, 0.008, 500), (1.1, 0.05, 120), (0.6, 0.125, 16)])
def test_opacus_accounting_agrees_with_googles_dp_accounting(noise, rate, steps):
    """The epsilon we report, recomputed by an independent library: within 1%, RDP against RDP and PRV against PLD."""
    import dp_accounting
    from opacus.accountants import PRVAccountant, RDPAccountant

    delta = 1e-5
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise))
    ours = RDPAccountant()
    ours.history = [(noise, rate, steps)]
    orders = list(RDPAccountant.DEFAULT_ALPHAS)  # the same orders on both sides
    theirs = dp_accounting.rdp.RdpAccountant(orders).compose(event, steps)
    assert ours.get_epsilon(delta) == pytest.approx(theirs.get_epsilon(delta), rel=0.01)
    prv = PRVAccountant()
    prv.history = [(noise, rate, steps)]
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4).compose(event, steps)
    assert prv.get_epsilon(delta) == pytest.approx(pld.get_epsilon(delta), rel=0.01)


def test_client_level_dp_clips_whole_updates_and_adds_calibrated_noise():
    from fedrp.privacy.client_level import ClientLevelDP, clip_update, epsilon_after, noisy_mean

    update = {"z": np.full(4, 3.0, dtype=np.float32), "head.bias": np.array([4.0, 0.0], dtype=np.float32)}
    clipped = clip_update(update, 2.0)  # norm sqrt(36 + 16) > 2: scaled down as a whole
    assert np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in clipped.values())) == pytest.approx(2.0, rel=1e-6)
    assert clipped["z"][0] / clipped["head.bias"][0] == pytest.approx(3.0 / 4.0)
    assert clip_update({"z": np.ones(4, np.float32)}, 5.0)["z"].tolist() == [1.0] * 4  # inside the bound: unchanged

    sent = {"z": np.zeros(2000, np.float32)}
    states = [{"z": np.full(2000, 10.0, np.float32)}, {"z": np.full(2000, -0.01, np.float32)}]
    dp = ClientLevelDP(noise_multiplier=2.0, clip=1.0, delta=1e-5)
    out = noisy_mean(sent, states, dp, num_sampled=4, rng=np.random.default_rng(0))["z"]
    expected = (1.0 / np.sqrt(2000) - 0.01) / 4  # the first update clipped to norm 1, divided by m = 4 sampled
    noise = np.random.default_rng(0).normal(0.0, 2.0 * 1.0 / 4, size=2000)  # the same draws: sigma C / m
    np.testing.assert_allclose(out, expected + noise, rtol=0, atol=1e-6)  # expected is 0.0031, far above 1e-6
    assert noise.std() == pytest.approx(0.5, rel=0.05)
    assert 0 < epsilon_after(dp, 0.5, 5) < epsilon_after(dp, 0.5, 10) and epsilon_after(dp, 0.5, 0) == 0.0


def test_per_class_clipping_bounds_every_example_by_the_clip_norm_and_balances_the_classes():
    from fedrp.federation.local import class_weights
    from fedrp.privacy.engine import clip_by_class

    torch.manual_seed(0)
    grads = {"z": torch.randn(6, 5) * 10, "head.weight": torch.randn(6, 2, 3) * 10, "head.bias": torch.randn(6, 2)}
    labels = torch.tensor([0, 1, 1, 1, 0, 1])
    weights = class_weights((20.0, 80.0))  # the rarer class 1, the class four times as frequent 1/4 (add-one smoothed)
    assert weights == pytest.approx((1.0, 21 / 81))
    clipped = clip_by_class(grads, labels, torch.tensor(weights), 2.0)
    norm = lambda g: torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))
    assert torch.allclose(norm(clipped), torch.tensor(weights)[labels] * 2.0, rtol=1e-4)  # all were above their norm
    for k, g in grads.items():  # each example only scaled: its direction kept
        cos = torch.nn.functional.cosine_similarity(g.flatten(1), clipped[k].flatten(1), dim=1)
        assert torch.allclose(cos, torch.ones(6), atol=1e-6)
    assert (norm(clipped) <= 2.0 + 1e-5).all()  # one example moves the sum by at most the clip norm: DP-SGD's noise holds
    apart = clip_by_class(grads, labels, torch.tensor(weights), 2.0, z_share=0.25)  # z and the head clipped apart
    limit = torch.tensor(weights)[labels] * 2.0
    assert torch.allclose(apart["z"].norm(dim=1), 0.5 * limit, rtol=1e-4)
    assert torch.allclose(norm({k: v for k, v in apart.items() if k != "z"}), 0.75 ** 0.5 * limit, rtol=1e-4)
    assert torch.allclose(norm(apart), limit, rtol=1e-4)  # within the example's norm as a whole
    small = {k: v * 1e-3 for k, v in grads.items()}
    assert all(torch.equal(a, b) for a, b in zip(clip_by_class(small, labels, torch.tensor(weights), 2.0).values(),
                                                 small.values()))  # below its norm: unchanged


def test_the_released_counts_are_accounted_and_the_total_stays_within_epsilon_by_an_independent_accountant():
    """The counts' Gaussian release composed with DP-SGD's Poisson-sampled steps: Opacus's RDP total, the calibration
    and Google's dp_accounting (RDP over the same orders) agree that the client's whole run spends at most epsilon."""
    import dp_accounting
    from opacus.accountants import RDPAccountant

    from fedrp.privacy.budget import ClientBudget

    config, delta, rate, steps_per_round, rounds = PrivacyConfig(epsilon=8.0), 1 / 800, 8 / 400, 50, 10
    budget = ClientBudget(config)
    counts = budget.release_counts([0] * 300 + [1] * 100, 2, noise=10.0)
    assert budget.history == [(10.0, 1.0, 1)] and abs(counts[0] - 300) < 60 and abs(counts[1] - 100) < 60
    noise = budget.noise_for_rounds(delta, rate, steps_per_round, rounds)
    for _ in range(rounds):
        budget.check(delta, noise, rate, steps_per_round)
        budget.history.append((noise, rate, steps_per_round))
    ours = budget.spent(delta)
    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    theirs = dp_accounting.rdp.RdpAccountant(orders).compose(dp_accounting.GaussianDpEvent(10.0)).compose(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)), steps_per_round * rounds)
    assert 7.9 < ours <= 8.0 and theirs.get_epsilon(delta) == pytest.approx(ours, rel=0.01)
    with pytest.raises(BudgetExhausted):
        budget.check(delta, noise, rate, steps_per_round)  # one round more than the noise was sized for
    assert ClientBudget.from_lists(config, budget.to_lists()) == budget  # the counts travel in the node state


def test_under_dp_the_logit_offsets_come_only_from_the_released_counts(glue_dir):
    from fedrp.federation import FedConfig, local_train_config
    from fedrp.federation.local import prior_offsets

    data = {"label": [0] * 30 + [1] * 10}
    plain = local_train_config(FedConfig(), data, 1, 0)
    assert plain.logit_offsets == pytest.approx(prior_offsets((30, 10)))  # without DP: the data's own counts
    private = FedConfig(dp_epsilon=8.0)
    assert local_train_config(private, data, 1, 0).logit_offsets is None  # exact counts would escape the accounting
    assert local_train_config(private, data, 1, 0, counts=(28.3, 12.9)).logit_offsets == pytest.approx(
        prior_offsets((28.3, 12.9)))


def test_under_dp_clients_default_to_the_measured_recipe_and_set_options_win():
    """dp-epsilon alone gives the setting measured under DP (AdamW at slash's DP rate, batches of 32); without DP
    the federated defaults stay; an option the user sets wins; an unmeasured DP rate must be set."""
    from fedrp.federation import FedConfig, local_train_config
    from fedrp.methods import RATES

    data = {"label": [0, 1] * 20}
    private = local_train_config(FedConfig(dp_epsilon=8.0), data, 1, 0)
    assert (private.optimizer, private.lr, private.batch_size) == ("adamw", RATES["slash"].federated_dp, 32)
    assert RATES["slash"].federated_dp == 0.05  # docs/guide/privacy.md: chosen on held-out examples
    plain = local_train_config(FedConfig(), data, 1, 0)
    assert (plain.optimizer, plain.lr, plain.batch_size) == ("adamw", RATES["slash"].federated, 8)
    chosen = local_train_config(FedConfig(dp_epsilon=8.0, local_optimizer="sgd", lr=0.1, batch_size=16), data, 1, 0)
    assert (chosen.optimizer, chosen.lr, chosen.batch_size) == ("sgd", 0.1, 16)
    with pytest.raises(ValueError, match="jrwarp has no measured federated rate for local-optimizer 'adamw' under "
                                         "dp-epsilon: set lr"):
        FedConfig(method="jrwarp", dp_epsilon=8.0)
    with pytest.raises(ValueError, match="local-optimizer 'sgd' under dp-epsilon: set lr"):
        FedConfig(dp_epsilon=8.0, local_optimizer="sgd")
    assert FedConfig(method="jrwarp", dp_epsilon=8.0, lr=0.01).learning_rate == 0.01


def test_dp_training_uses_the_optimizer_it_is_given(default_backbone, sst2_slice, monkeypatch):
    """DP-SGD wraps the configured optimizer (it once wrapped AdamW whatever the config said)."""
    from fedrp.privacy import engine
    from fedrp.train import TrainConfig

    real, wrapped = engine.DPOptimizer, []

    def spy(optimizer, **options):
        wrapped.append(type(optimizer))
        return real(optimizer, **options)

    monkeypatch.setattr(engine, "DPOptimizer", spy)
    model = build(ModelSpec(method="slash"), default_backbone)
    for name, kind in (("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)):
        cfg = TrainConfig(lr=1e-2, optimizer=name, batch_size=32, epochs=0.25, bf16="off", progress=False)
        engine.train_private(model, sst2_slice, cfg, PrivacyConfig(epsilon=8.0), torch.device("cpu"))
        assert wrapped[-1] is kind


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("kwargs, message", [
    (dict(epsilon=INF), "epsilon must be positive and finite, got inf"),
    (dict(epsilon=NAN), "epsilon must be positive and finite, got nan"),
    (dict(epsilon=8, noise_multiplier=INF), "noise_multiplier must be positive and finite, got inf"),
    (dict(epsilon=8, noise_multiplier=NAN), "noise_multiplier must be positive and finite, got nan"),
    (dict(epsilon=8, max_grad_norm=INF), "max_grad_norm must be positive and finite, got inf"),
    (dict(epsilon=8, delta=NAN), r"delta must be in \(0, 1\), got nan"),
])
def test_dp_settings_must_be_finite(kwargs, message):
    """Infinite noise trained z and the head to NaN, and an infinite budget calibrated a noise that spent nothing."""
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**kwargs)


@pytest.mark.parametrize("key, value, message", [
    ("dp-epsilon", INF, "dp-epsilon must be 0 (no DP) or a finite positive budget, got inf"),
    ("dp-epsilon", NAN, "dp-epsilon must be 0 (no DP) or a finite positive budget, got nan"),
    ("dp-max-grad-norm", INF, "max_grad_norm must be positive and finite, got inf"),
    ("client-dp-noise", INF, "client-level DP needs finite client-dp-noise > 0"),
    ("client-dp-clip", INF, "client-level DP needs finite client-dp-noise > 0"),
    ("secagg-clip", INF, "secagg-clip must be positive and finite, got inf"),
    ("secagg-max-weight", INF, "secagg-max-weight must be a finite number of at least 1, got inf"),
    ("trim-beta", NAN, "trim-beta must be in [0, 0.5) (the share cut from each end), got nan"),
    ("trim-beta", 0.5, "trim-beta must be in [0, 0.5) (the share cut from each end), got 0.5"),
])
def test_the_run_config_refuses_non_finite_settings(key, value, message):
    """As `python -m simulations.run --KEY VALUE` passes them, with what each needs to take effect."""
    from fedrp.federation import FedConfig

    needs = {"dp-max-grad-norm": {"dp-epsilon": 8.0}, "client-dp-clip": {"client-dp-noise": 1.0},
             "secagg-clip": {"secure-aggregation": "secagg+"}, "secagg-max-weight": {"secure-aggregation": "secagg+"}}
    with pytest.raises(ValueError) as refused:
        FedConfig.from_run_config({}, {**needs.get(key, {}), key: value})
    assert message in str(refused.value)
