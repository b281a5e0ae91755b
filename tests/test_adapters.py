"""SLaSh and JR-WARP on every supported family and on the real default backbone."""

import pytest
import torch
import transformers
from transformers import AutoModel

from fedrp.adapters import build_model, make_config
from fedrp.backbone import FAMILIES, Backbone, accepted_inputs, freeze, target_linears
from fedrp.inputs import batch_inputs, encode
from tests.conftest import PAIRS, TEXTS, TINY_CONFIGS

VARIANTS = [("slash", {"shift_position": p}) for p in ("output", "intermediate", "attention")] + [("jrwarp", {})]


def _inputs(backbone, pooling="mask"):
    return batch_inputs(backbone.tokenizer, TEXTS, PAIRS, pooling)


def test_every_supported_family_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("method, extra", VARIANTS, ids=[f"{m}-{e.get('shift_position', 'prompt')}" for m, e in VARIANTS])
def test_family_trains_only_z_and_head(tiny_backbone, family, method, extra):
    backbone = tiny_backbone(family)
    plain_inputs = {k: v for k, v in _inputs(backbone).items() if k in accepted_inputs(backbone.model)}
    baseline = backbone.model(**plain_inputs).last_hidden_state
    model = build_model(backbone, make_config(method, d=16, num_labels=3, **extra))
    assert set(model.trainable_parameters()) == {"z", "head.weight", "head.bias"}
    assert model.num_trainable() == 16 + 32 * 3 + 3

    logits = model(**_inputs(backbone))
    assert logits.shape == (3, 3)
    logits.square().sum().backward()
    assert model.z.grad is not None and model.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())

    # The adapter changes the hidden states; detached, the backbone computes exactly as before.
    with torch.no_grad():
        model.z.mul_(50)
        adapted = model.hidden_states(model.backbone_inputs(_inputs(backbone)))
    assert not torch.allclose(adapted, baseline, atol=1e-4)
    model.detach_layers()
    again = backbone.model(**plain_inputs).last_hidden_state
    torch.testing.assert_close(again, baseline)


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
@pytest.mark.parametrize("position", ["output", "intermediate", "attention"])
def test_slash_shift_equals_a_bias_change(tiny_backbone, family, position):
    """s_l enters exactly as b + s_l of the target Linear: the reason export costs no latency."""
    backbone = tiny_backbone(family)
    model = build_model(backbone, make_config("slash", d=16, shift_position=position))
    with torch.no_grad():
        model.z.mul_(50)
        expected = model(**_inputs(backbone))
        model.fold_into_biases()
        folded = model(**_inputs(backbone))
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)


def test_unsupported_architecture_names_the_supported_families(default_tokenizer):
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100)
    model = freeze(AutoModel.from_config(config))
    with pytest.raises(ValueError, match=r"unsupported architecture 'gpt2'.*bert.*deberta-v2.*distilbert.*electra.*roberta"):
        build_model(Backbone("gpt2-tiny", model, default_tokenizer), make_config("slash", d=8))


def test_default_backbone_counts_and_dropout(default_backbone):
    model = build_model(default_backbone, make_config("slash"))
    # d + H * C + C for MiniLM-L6 (H = 384) and two classes: the design card's 1,794 numbers
    assert model.num_trainable() == 1024 + 384 * 2 + 2 == 1794
    assert model.spec.widths == (384,) * 6
    model.train()
    assert model.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())


def test_default_backbone_intermediate_width(default_backbone):
    model = build_model(default_backbone, make_config("slash", shift_position="intermediate"))
    assert model.spec.widths == (1536,) * 6
    assert model.num_trainable() == 1794


def test_training_steps_move_only_z_and_head(default_backbone):
    model = build_model(default_backbone, make_config("jrwarp"))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    z0 = model.z.detach().clone()
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2)
    batch = batch_inputs(model.tokenizer, TEXTS, PAIRS)
    labels = torch.tensor([1, 0, 1])
    model.train()
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(**batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(model.z.detach(), z0)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_one_adapter_per_backbone(default_backbone):
    model = build_model(default_backbone, make_config("slash"))
    with pytest.raises(ValueError, match="already carries an adapter"):
        build_model(default_backbone, make_config("jrwarp"))
    model.detach_layers()
    build_model(default_backbone, make_config("jrwarp"))


def test_mask_token_sits_after_the_first_segment(default_tokenizer):
    tok = default_tokenizer
    enc = encode(tok, ["good movie"], ["yes"], pooling="mask")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens == ["[CLS]", "good", "movie", "[MASK]", "[SEP]", "yes", "[SEP]"]
    assert enc["token_type_ids"][0] == [0, 0, 0, 0, 0, 1, 1]
    # text cannot inject the pooling token, and truncation never drops it
    enc = encode(tok, ["[MASK] " + "word " * 300], None, pooling="mask", max_length=32)
    ids = enc["input_ids"][0]
    assert len(ids) == 32 and ids.count(tok.mask_token_id) == 1 and ids[-2] == tok.mask_token_id


@pytest.mark.parametrize("pooling", ["mask", "cls", "mean"])
@pytest.mark.parametrize("method", ["jrwarp", "slash"])
def test_poolings_on_default_backbone(default_backbone, pooling, method):
    model = build_model(default_backbone, make_config(method, pooling=pooling, num_labels=1))
    batch = batch_inputs(model.tokenizer, TEXTS, PAIRS, pooling)
    out = model(**batch)
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    # padding must not change an example's output
    single = model(**batch_inputs(model.tokenizer, TEXTS[1:2], PAIRS[1:2], pooling))
    torch.testing.assert_close(single[0], out[1], rtol=1e-4, atol=1e-5)


def test_jrwarp_prompt_replaces_the_slot_at_block_zero(default_backbone):
    """Whatever token fills the prompt slot, block 0 sees only z W_0 there."""
    from fedrp.methods import jrwarp

    model = build_model(default_backbone, make_config("jrwarp"))
    inputs = model.backbone_inputs(batch_inputs(model.tokenizer, TEXTS, PAIRS))
    with torch.no_grad():
        a = jrwarp.prompted_hidden_states(model.backbone, inputs, slot_id=0)
        b = jrwarp.prompted_hidden_states(model.backbone, inputs, slot_id=2054)
    torch.testing.assert_close(a, b)
    assert a.shape == model.backbone(**inputs).last_hidden_state.shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(d=0), "d must be a positive integer"),
    (dict(pooling="max"), "pooling must be one of"),
    (dict(distribution="normal"), "distribution must be one of"),
    (dict(shift_position="ffn"), "SLaSh position must be one of"),
])
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_config("slash", **kwargs)
    with pytest.raises(ValueError, match="unknown adapter method"):
        make_config("prefix")


def test_target_linears_have_the_expected_widths(default_backbone):
    m = default_backbone.model
    assert [l.out_features for l in target_linears(m, "output")] == [384] * 6
    assert [l.out_features for l in target_linears(m, "attention")] == [384] * 6
    assert [l.out_features for l in target_linears(m, "intermediate")] == [1536] * 6
