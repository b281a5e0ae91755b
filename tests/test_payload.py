"""What travels and the checks a reply must pass before the server aggregates it."""

import numpy as np
import pytest

from fedrp import payload
from fedrp.backbone import load_backbone
from fedrp.methods import build
from fedrp.spec import ModelSpec

REF = {"z": np.zeros(8, np.float32), "head.weight": np.zeros((2, 4), np.float32), "head.bias": np.zeros(2, np.float32)}


def _good():
    return {k: v + 0.1 for k, v in REF.items()}


def test_a_good_reply_passes():
    assert payload.refusal(_good(), REF, "f" * 64, "f" * 64, 10.0, norm_bound=10.0) is None


@pytest.mark.parametrize("change, reason", [
    (lambda s: s.pop("z"), payload.MISSING),
    (lambda s: s.update(extra=np.zeros(1, np.float32)), payload.UNEXPECTED),
    (lambda s: s.update(z=np.zeros(7, np.float32)), payload.SHAPE),
    (lambda s: s.update(z=np.zeros(8, np.float64)), payload.DTYPE),
    (lambda s: s["z"].__setitem__(3, np.inf), payload.NON_FINITE),
    (lambda s: s["head.bias"].__setitem__(0, np.nan), payload.NON_FINITE),
])
def test_every_array_refusal_reason(change, reason):
    state = _good()
    change(state)
    verdict = payload.refusal(state, REF, "f" * 64, "f" * 64, 10.0)
    assert verdict is not None and verdict[0] == reason


def test_fingerprint_examples_and_norm_refusals():
    assert payload.refusal(_good(), REF, "e" * 64, "f" * 64, 10.0)[0] == payload.FINGERPRINT
    assert payload.refusal(_good(), REF, None, "f" * 64, 10.0)[0] == payload.FINGERPRINT
    assert payload.refusal(_good(), REF, "f" * 64, "f" * 64, 0.0)[0] == payload.EXAMPLES
    assert payload.refusal(_good(), REF, "f" * 64, "f" * 64, float("nan"))[0] == payload.EXAMPLES
    far = {k: v + 100.0 for k, v in REF.items()}
    verdict = payload.refusal(far, REF, "f" * 64, "f" * 64, 10.0, norm_bound=50.0)
    assert verdict[0] == payload.NORM and "exceeds the bound 50" in verdict[1]
    # the norm is of the update (new - sent), not of the state itself
    assert payload.update_norm(far, REF) == pytest.approx(100.0 * np.sqrt(18))


@pytest.mark.parametrize("method", ["slash", "lora"])
def test_state_round_trips_through_a_model(method):
    model = build(ModelSpec(method=method), load_backbone())
    state = payload.trainable_state(model)
    assert all(v.dtype == np.float32 for v in state.values())
    changed = {k: v + 1.0 for k, v in state.items()}
    payload.load_trainable_state(model, changed)
    again = payload.trainable_state(model)
    assert all(np.array_equal(again[k], changed[k]) for k in state)
    with pytest.raises(ValueError):
        payload.load_trainable_state(model, {**changed, next(iter(state)): np.zeros(3, np.float32)})


def test_slash_payload_fits_in_8_kb():
    state = payload.trainable_state(build(ModelSpec(method="slash"), load_backbone()))
    assert set(state) == {"z", "head.weight", "head.bias"}
    assert payload.nbytes(state) == 4 * (1024 + 384 * 2 + 2) <= 8 * 1024


def test_shared_code_asks_the_model_so_a_model_of_no_known_kind_travels_and_is_refused_dp_by_name(tiny_backbone):
    """Payloads, identity and DP's per-sample rule come from the model's own methods, not from its type: a
    Classifier subclass that neither fedrp.adapters nor fedrp.baselines knows still round-trips its state."""
    from torch import nn

    from fedrp.classifier import Classifier
    from fedrp.federation.model import identity
    from fedrp.privacy.grad_sample import per_sample_engine
    from fedrp.refusals import StateMismatch

    class Toy(Classifier):
        backbone_name, backbone_config_hash, method = "tiny-bert", "h", "toy"

    backbone = tiny_backbone("bert")
    toy = Toy(backbone.model, backbone.tokenizer, nn.Linear(backbone.hidden_size, 3), "cls")
    state = payload.trainable_state(toy)
    assert sorted(state) == ["head.bias", "head.weight"] and state["head.weight"].dtype == np.float32
    payload.load_trainable_state(toy, {k: v + 1 for k, v in state.items()})
    np.testing.assert_array_equal(toy.head.bias.detach().numpy(), state["head.bias"] + 1)
    with pytest.raises(StateMismatch, match="shape"):
        payload.load_trainable_state(toy, {"head.weight": np.zeros((2, 2), np.float32), "head.bias": state["head.bias"]})
    assert identity(toy) == {"backbone": "tiny-bert", "backbone-hash": "h"}
    refused = "DP training supports slash, jrwarp, head, lora; got 'toy'"
    with pytest.raises(ValueError, match=refused), per_sample_engine(toy):
        pass
