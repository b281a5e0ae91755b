"""The shared training loop and the baselines, on small real slices of GLUE and the real backbone."""

import dataclasses
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from fedrp import data, glue
from fedrp.backbone import load_backbone
from fedrp.federation import FedConfig, local_train_config, logit_offsets
from fedrp.methods import METHODS, build, payload_bytes
from fedrp.privacy.config import PrivacyConfig
from fedrp.privacy.engine import poisson_schedule, train_private
from fedrp.spec import ModelSpec
from fedrp.train import TrainConfig, evaluate, loss_fn, predictions, select_device, train
from tests.conftest import TINY_CONFIGS

CPU = torch.device("cpu")


def _config(**kw):
    return TrainConfig(**{"lr": 3e-2, "batch_size": 16, "bf16": "off", "progress": False, **kw})


@pytest.fixture(scope="module")
def sst2(glue_dir):
    tok = load_backbone().tokenizer
    train_ds = data.subset(data.load_tokenized("sst2", "train", tok, data_dir=glue_dir), 256)
    dev = data.subset(data.load_tokenized("sst2", "dev", tok, data_dir=glue_dir), 128, seed=None)
    return train_ds, dev


def test_slash_learns_sst2_from_a_small_slice(sst2):
    train_ds, dev = sst2
    model = build(ModelSpec(method="slash"), load_backbone())
    before = evaluate(model, dev, glue.get_task("sst2"), device=CPU)["accuracy"]
    result = train(model, train_ds, _config(epochs=2), CPU)
    after = evaluate(model, dev, glue.get_task("sst2"), device=CPU)["accuracy"]
    assert result.steps == 32 and result.examples == 512
    assert np.isfinite(result.loss) and result.samples_per_second > 0
    assert after > before + 0.05 and after > 0.6


TOLERANCE = 1e-5


def test_gradient_accumulation_matches_the_larger_batch(sst2):
    train_ds, _ = sst2
    train_ds = train_ds.select(range(64))
    zs = []
    for batch_size, accum in [(16, 1), (8, 2)]:
        model = build(ModelSpec(method="slash"), load_backbone())
        # SGD: its step scales with the gradient, so a sum where a mean belongs shows (AdamW would hide it)
        cfg = _config(optimizer="sgd", lr=0.3, batch_size=batch_size, grad_accum=accum, schedule="constant",
                      warmup_ratio=0.0, max_grad_norm=None)
        assert train(model, train_ds, cfg, CPU).steps == 4
        zs.append(model.z.detach().clone())
    moved = (zs[0] - build(ModelSpec(method="slash"), load_backbone()).z.detach()).abs().max()
    assert moved > 100 * TOLERANCE  # the four steps moved z far more than the tolerance below
    # same examples per optimizer step: equal up to padding-dependent rounding
    torch.testing.assert_close(zs[0], zs[1], rtol=0, atol=TOLERANCE)


def test_local_steps_take_each_step_on_a_clients_whole_data_whatever_its_size(sst2):
    train_ds, _ = sst2
    fedsgd = FedConfig(local_steps=1, batch_size=8, local_optimizer="sgd", lr=0.3, lr_decay="none", bf16="off")
    for n in (24, 44):  # 44: a last batch of 4
        cfg = local_train_config(fedsgd, train_ds.select(range(n)), 1, 0)
        assert (cfg.epochs, cfg.batch_size, cfg.grad_accum) == (1.0, 8, -(-n // 8))
    twice = local_train_config(FedConfig(local_steps=2, batch_size=8, bf16="off"), train_ds.select(range(12)), 1, 0)
    result = train(build(ModelSpec(method="slash"), load_backbone()), train_ds.select(range(12)), twice, CPU)
    assert (result.steps, result.examples) == (2, 24)  # two passes, each its own step
    zs = []  # FedSGD's step on 24 examples in batches of 8 is the step of one batch of all 24
    for tcfg in (cfg := local_train_config(fedsgd, train_ds.select(range(24)), 1, 0),
                 dataclasses.replace(cfg, batch_size=24, grad_accum=1)):
        model = build(ModelSpec(method="slash"), load_backbone())
        result = train(model, train_ds.select(range(24)), dataclasses.replace(tcfg, progress=False), CPU)
        assert (result.steps, result.examples) == (1, 24)
        zs.append(model.z.detach().clone())
    assert (zs[0] - build(ModelSpec(method="slash"), load_backbone()).z.detach()).abs().max() > 100 * TOLERANCE
    torch.testing.assert_close(zs[0], zs[1], rtol=0, atol=TOLERANCE)
    # Under DP-SGD a step is one Poisson batch of the whole data (rate 1), so the accountant counts one step.
    private = local_train_config(dataclasses.replace(fedsgd, dp_epsilon=8.0), train_ds.select(range(44)), 1, 0)
    assert poisson_schedule(44, private.batch_size, private.epochs) == (1.0, 1)


def test_fedsgd_without_local_clipping_averages_to_the_federations_full_batch_step(sst2):
    train_ds, _ = sst2
    negatives = [i for i, y in enumerate(train_ds["label"]) if y == 0]
    clients = [train_ds.select(negatives[:12]), train_ds.select(range(12))]  # one class, and a mix
    union = train_ds.select(negatives[:12] + list(range(12)))

    def step(clip: float, data) -> torch.Tensor:  # SGD's first step at rate 1 is minus the (clipped) gradient
        fedsgd = FedConfig(local_steps=1, batch_size=8, local_optimizer="sgd", lr=1.0, lr_decay="none", bf16="off",
                           local_loss="ce", local_clip=clip)
        model = build(ModelSpec(method="slash"), load_backbone())
        start = torch.cat([p.detach().flatten() for p in model.trainable_parameters().values()])
        train(model, data, local_train_config(fedsgd, data, 1, 0), CPU)
        return torch.cat([p.detach().flatten() for p in model.trainable_parameters().values()]) - start

    assert local_train_config(FedConfig(), clients[0], 1, 0).max_grad_norm == 1.0  # the default clips
    whole = step(0.0, union)
    for clip, agrees in ((0.0, True), (1.0, False)):
        mean = (step(clip, clients[0]) + step(clip, clients[1])) / 2
        assert torch.allclose(mean, whole, atol=1e-4) is agrees
    with pytest.raises(ValueError, match="local-clip"):
        FedConfig(local_clip=-1.0)


def test_sgd_steps_in_proportion_to_the_gradient_and_adamw_by_its_sign(sst2):
    train_ds, _ = sst2
    batch = train_ds.select(range(16))
    steps = {}
    for optimizer in ("sgd", "adamw"):
        model = build(ModelSpec(method="head"), load_backbone())
        before = model.head.weight.detach().clone()
        cfg = _config(optimizer=optimizer, lr=1e-3, schedule="constant", warmup_ratio=0.0, max_grad_norm=None)
        train(model, batch, cfg, CPU)
        steps[optimizer] = (model.head.weight.detach() - before).flatten()
    model = build(ModelSpec(method="head"), load_backbone())
    inputs = next(iter(data.loader(batch, model.tokenizer, 16)))  # the one batch train saw, in another order
    labels = inputs.pop("labels")
    loss_fn(model(**inputs), labels).backward()
    grad = model.head.weight.grad.flatten()
    torch.testing.assert_close(steps["sgd"], -1e-3 * grad, rtol=1e-3, atol=1e-8)  # first step: momentum is the gradient
    assert torch.quantile(steps["adamw"].abs(), 0.1) > 0.9e-3  # Adam: about lr on nearly every weight, whatever its gradient
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")


def test_nan_loss_stops_with_a_clear_error(sst2):
    train_ds, _ = sst2
    model = build(ModelSpec(method="head"), load_backbone())
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 1 of \d+ \(lr 0.03\); lower the learning rate"):
        train(model, train_ds, _config(), CPU)


def test_same_seed_same_result(sst2):
    train_ds, _ = sst2
    runs = []
    for _ in range(2):
        model = build(ModelSpec(method="jrwarp"), load_backbone())
        train(model, train_ds.select(range(48)), _config(lr=1e-2), CPU)
        runs.append(model.z.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("private", [False, True])
def test_lora_init_and_dropout_follow_the_seed_not_what_ran_before_in_the_process(sst2, private):
    """LoRA's A and the backbone's dropout draw from torch's global generator: two runs with other draws
    between them (an earlier bench cell, another client in-process) must still agree to the bit."""
    train_ds, _ = sst2
    runs = []
    for draws in (1, 1000):
        torch.rand(draws)  # what an earlier run in this process might have drawn
        model = build(ModelSpec(method="lora"), load_backbone())
        init = {n: p.detach().clone() for n, p in model.trainable_parameters().items()}
        if private:
            train_private(model, train_ds.select(range(16)), _config(lr=1e-3), PrivacyConfig(epsilon=8.0), CPU)
        else:
            train(model, train_ds.select(range(16)), _config(lr=1e-3), CPU)
        runs.append((init, {n: p.detach().clone() for n, p in model.trainable_parameters().items()}))
    for first, second in zip(*runs):  # the initial weights, then the trained ones
        assert first.keys() == second.keys() and all(torch.equal(first[n], second[n]) for n in first)
    trained = runs[0][1]
    assert not torch.equal(runs[0][0]["head.weight"], trained["head.weight"])  # the runs did train


EXPECTED_PARAMS = {
    "slash": 1024 + 770, "jrwarp": 1024 + 770, "head": 770,
    # 6 blocks x (query and value) x rank 8 x (384 in + 384 out)
    "lora": 6 * 2 * 8 * (384 + 384) + 770,
}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_reports_what_it_trains_and_sends(method):
    backbone = load_backbone()
    total = sum(p.numel() for p in backbone.model.parameters())
    biases = sum(p.numel() for n, p in backbone.model.named_parameters() if n.endswith(".bias"))
    model = build(ModelSpec(method=method), backbone)
    expected = {**EXPECTED_PARAMS, "full": total + 770, "bitfit": biases + 770}[method]
    assert model.num_trainable() == expected
    assert payload_bytes(model) == 4 * expected


@pytest.mark.parametrize("method", ["head", "lora", "bitfit", "full"])
def test_baselines_train_in_the_same_loop(sst2, method):
    train_ds, _ = sst2
    model = build(ModelSpec(method=method), load_backbone())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    moving = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    lr = {"head": 1e-2, "lora": 1e-3, "bitfit": 1e-3, "full": 1e-4}[method]
    train(model, train_ds.select(range(32)), _config(lr=lr), CPU)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert all(not torch.equal(params[n], v) for n, v in moving.items() if n.startswith("head"))
    assert sum(not torch.equal(params[n], v) for n, v in moving.items()) > 0.5 * len(moving)


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb", "rte", "wnli"])
def test_every_present_task_trains_and_evaluates(glue_dir, task):
    t = glue.get_task(task)
    backbone = load_backbone()
    train_ds = data.subset(data.load_tokenized(t, "train", backbone.tokenizer, data_dir=glue_dir), 48)
    dev = data.subset(data.load_tokenized(t, "dev", backbone.tokenizer, data_dir=glue_dir), 40, seed=None)
    model = build(ModelSpec(method="slash", num_labels=t.num_labels), backbone)
    result = train(model, train_ds, _config(), CPU)
    got = evaluate(model, dev, t, device=CPU)
    assert set(got) == set(t.metrics) and all(np.isfinite(v) for v in got.values())
    assert np.isfinite(result.loss)
    labels, preds = predictions(model, dev, device=CPU)
    if t.is_regression:
        assert preds.dtype == np.float32 and labels.dtype == np.float32
    else:
        assert set(np.unique(preds)) <= set(range(t.num_labels))


def test_regression_uses_mse_and_classes_cross_entropy():
    scores = torch.tensor([[0.5], [2.0]])
    assert loss_fn(scores, torch.tensor([1.0, 2.0])).item() == pytest.approx(0.125)
    logits = torch.tensor([[0.0, 0.0]])
    assert loss_fn(logits, torch.tensor([1])).item() == pytest.approx(np.log(2))


@pytest.mark.parametrize("method", ["slash", "bitfit"])
def test_bf16_autocast_on_cpu_when_supported(sst2, method):
    from fedrp.train import bf16_supported

    train_ds, _ = sst2
    model = build(ModelSpec(method=method), load_backbone())
    if bf16_supported(CPU):
        assert np.isfinite(train(model, train_ds.select(range(32)), _config(bf16="on", lr=1e-3), CPU).loss)
        assert all(p.dtype == torch.float32 for p in model.trainable_parameters().values())  # autocast keeps them fp32
        # Frozen weights go bf16 only in modules with nothing to train (BitFit's LayerNorms keep fp32 weights).
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                assert all(p.dtype == torch.bfloat16 for p in own), module
            elif any(p.requires_grad for p in own):
                assert all(p.dtype == torch.float32 for p in own), module
    else:
        with pytest.raises(ValueError, match="no native bf16"):
            train(model, train_ds, _config(bf16="on"), CPU)


def test_logit_offsets_are_the_smoothed_log_prior_and_enter_only_training(sst2):
    train_ds, _ = sst2
    assert logit_offsets([1, 1, 1, 0], 2) == pytest.approx((np.log(2 / 6), np.log(4 / 6)))
    assert logit_offsets([1, 1], 3) == pytest.approx((np.log(1 / 5), np.log(3 / 5), np.log(1 / 5)))
    balanced = train_ds.select(range(64))
    skewed = train_ds.select([i for i, y in enumerate(train_ds["label"]) if y == 1][:48]
                             + [i for i, y in enumerate(train_ds["label"]) if y == 0][:16])
    states = {}
    for name, ds, off in (("plain", balanced, None), ("uniform", balanced, (np.log(0.5), np.log(0.5))),
                          ("skew-plain", skewed, None), ("skew-adjusted", skewed, logit_offsets(skewed["label"], 2))):
        model = build(ModelSpec(method="slash"), load_backbone())
        train(model, ds, _config(logit_offsets=off, seed=3), CPU)
        states[name] = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    for k in states["plain"]:  # equal offsets shift every logit alike: softmax, loss and steps unchanged
        torch.testing.assert_close(states["uniform"][k], states["plain"][k], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(states["skew-adjusted"]["z"], states["skew-plain"]["z"], atol=1e-4)


def test_evaluation_adds_the_logit_offsets_before_the_argmax(sst2):
    """What the server does with the federation's prior: a large offset decides every answer, a zero one none."""
    _, dev = sst2
    model = build(ModelSpec(method="slash"), load_backbone())
    labels, plain = predictions(model, dev, 64, CPU)
    for cls in (0, 1):
        offsets = tuple(50.0 if c == cls else 0.0 for c in range(2))
        _, shifted = predictions(model, dev, 64, CPU, offsets)
        assert (shifted == cls).all(), cls
        assert evaluate(model, dev, glue.get_task("sst2"), 64, CPU, offsets)["accuracy"] == pytest.approx(
            float(np.mean(labels == cls)))
    _, unshifted = predictions(model, dev, 64, CPU, (0.0, 0.0))
    assert (unshifted == plain).all()


def test_device_selection_and_config_checks():
    assert select_device("cpu") == CPU
    assert select_device().type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        TrainConfig(batch_size=0)
    for name, value in (("lr", float("inf")), ("epochs", float("inf")), ("lr", float("nan"))):
        with pytest.raises(ValueError, match=f"{name} must be positive and finite, got {value}"):
            TrainConfig(**{name: value})
    with pytest.raises(ValueError, match="max_grad_norm must be 0 or None"):
        TrainConfig(max_grad_norm=float("nan"))


def test_a_diverged_run_ends_in_one_line_and_saves_nothing(glue_dir, tmp_path, monkeypatch, tiny_backbone):
    """A NaN state must neither be evaluated as if it were a model nor replace the adapter an earlier run left."""
    from fedrp import centralized
    from fedrp.train import TrainResult

    def diverge(model, ds, config, device):
        with torch.no_grad():
            model.z.fill_(float("nan"))
        return TrainResult(steps=1, examples=len(ds), seconds=0.1, loss=float("nan"))

    def unreached(*args, **kwargs):
        raise AssertionError("a non-finite model was evaluated")

    monkeypatch.setattr(centralized, "load_backbone", lambda name=None: tiny_backbone("bert"))
    monkeypatch.setattr(centralized, "train", diverge)
    monkeypatch.setattr(centralized, "dev_metrics", unreached)
    earlier = tmp_path / "wnli-slash.safetensors"
    earlier.write_bytes(b"an earlier adapter")
    cfg = centralized.RunConfig(task="wnli", method="slash", d=16, data_dir=str(glue_dir), max_train_samples=8,
                                out=str(tmp_path), overwrite=True, bf16="off", device="cpu", progress=False)
    with pytest.raises(FloatingPointError, match=r"ended with non-finite values in \['z'\]; nothing was saved"):
        centralized.run(cfg)
    assert list(tmp_path.iterdir()) == [earlier] and earlier.read_bytes() == b"an earlier adapter"


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("prompt", [0, 1])
def test_max_tokens_is_the_longest_input_each_family_embeds(family, prompt):
    """BERT-like models number positions from 0, so JR-WARP's prompt slot takes one; RoBERTa-like ones from
    padding_idx + 1, skipping pad-id tokens (the slot is the pad id), so it takes none of their 514 - 2."""
    from transformers import AutoModel

    from fedrp.backbone import max_tokens

    config = TINY_CONFIGS[family]()
    model = AutoModel.from_config(config).eval()
    limit = max_tokens(config, prompt)
    assert limit == {"roberta": 510, "xlm-roberta": 510}.get(family, 512 - prompt)
    for length, fits in ((limit, True), (limit + 1, False)):
        ids = torch.cat([torch.full((1, prompt), config.pad_token_id or 0), torch.full((1, length), 1000)], 1)
        with nullcontext() if fits else pytest.raises(RuntimeError):  # a tensor-size mismatch
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    if family == "deberta-v2":  # relative positions only: no bound
        config.position_biased_input = False
        assert max_tokens(config, prompt) is None


def test_a_run_configs_max_length_is_checked_against_its_backbone_before_it_loads(monkeypatch):
    from fedrp.federation import FedConfig, check_run_max_length, clientdata, warm_caches

    check_run_max_length(FedConfig(max_length=512))
    check_run_max_length(FedConfig(method="jrwarp", max_length=511))
    with pytest.raises(ValueError, match="max-length 513 is more than the backbone takes: its 512 position embeddings "
                                         "hold 512 tokens; expected max-length of at most 512"):
        check_run_max_length(FedConfig(max_length=513))
    with pytest.raises(ValueError, match="hold 511 tokens beside the prompt token"):
        check_run_max_length(FedConfig(method="jrwarp", max_length=512))

    def unreached(*args, **kwargs):
        raise AssertionError("the backbone loaded before the max length was checked")

    monkeypatch.setattr(clientdata, "load_backbone", unreached)  # simulations.run warms the caches before Ray
    with pytest.raises(ValueError, match="max-length 1024 is more than the backbone takes"):
        warm_caches(FedConfig(max_length=1024), 2)


def test_tokenization_is_cached_on_disk(glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDRP_CACHE", str(tmp_path))
    tok = load_backbone().tokenizer
    first = data.load_tokenized("rte", "dev", tok, data_dir=glue_dir)
    cached = list((tmp_path / "tokens").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("rte-dev-")
    data._load_or_build.cache_clear()
    again = data.load_tokenized("rte", "dev", tok, data_dir=glue_dir)
    assert again["input_ids"] == first["input_ids"]
    assert list((tmp_path / "tokens").iterdir()) == cached
    # another pooling is another cache entry
    data.load_tokenized("rte", "dev", tok, pooling="cls", data_dir=glue_dir)
    assert len(list((tmp_path / "tokens").iterdir())) == 2


def test_batches_are_padded_per_batch(glue_dir):
    tok = load_backbone().tokenizer
    ds = data.load_tokenized("sst2", "dev", tok, data_dir=glue_dir).select(range(64))
    lengths = [b["input_ids"].shape[1] for b in data.loader(ds, tok, 8)]
    assert len(set(lengths)) > 1
    assert max(lengths) == max(len(x) for x in ds["input_ids"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pads_exactly_as_the_tokenizer_does(glue_dir, side):
    """The numpy padding gives tokenizer.pad's tensors, token types of a pair task included."""
    tok = load_backbone().tokenizer
    tok.padding_side = side
    try:
        for task in ("mrpc", "sst2"):
            ds = data.load_tokenized(task, "dev", tok, data_dir=glue_dir).select(range(40))
            rows = ds[list(range(0, 40, 3))]
            expected = dict(tok.pad({k: v for k, v in rows.items() if k != "label"}, padding=True, return_tensors="pt"))
            got = data.collate(tok, dict(rows))
            assert set(got) == {*expected, "labels"} and "token_type_ids" in got
            assert len({len(x) for x in rows["input_ids"]}) > 1  # padding happens
            for k, v in expected.items():
                assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    finally:
        tok.padding_side = "right"


def test_losses_read_back_in_groups_name_the_step_that_went_non_finite():
    """On an accelerator the loop reads its losses every READ_LOSS_EVERY steps; a NaN in the middle
    of a group is still reported at its own step."""
    from tqdm.auto import tqdm

    from fedrp.train import _StepLosses

    losses = _StepLosses(total_steps=9, lr=0.5, bar=tqdm(disable=True))
    for value in (1.0, 0.5):
        losses.add(torch.tensor(value))
    assert losses.read() == 0.5
    for value in (0.4, float("nan"), 0.3):
        losses.add(torch.tensor(value))
    with pytest.raises(FloatingPointError, match=r"became nan at step 4 of 9 \(lr 0.5\)"):
        losses.read()
