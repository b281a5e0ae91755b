"""Projection modes: streamed rebuilds the stored W_l in row blocks, srht is a structured projection of its own."""

import hashlib
import json

import numpy as np
import pytest
import scipy.linalg
import torch

from fedrp import artifact, projection
from fedrp.adapters import build_model, make_config
from fedrp.adapters.projectors import Projections, SRHTProjections, StreamedProjections, fwht
from fedrp.inputs import batch_inputs
from fedrp.methods import build
from fedrp.privacy.grad_sample import per_sample_gradients
from fedrp.projection import ProjectionSpec
from fedrp.spec import ModelSpec
from tests.conftest import PAIRS, TEXTS
from tests.test_privacy import TEXTS4, _ce, _one_by_one, _random_state

GOLDEN = ProjectionSpec(seed=7, d=8, distribution="gaussian", position="output", widths=(4, 3))
GOLDEN_FINGERPRINT = "fab2a3d210e6b49a24481d7c9d86c4a2c8f41036505940f301def36cfcc0d4fe"  # as in test_projection
GOLDEN_SRHT = ProjectionSpec(seed=7, d=8, distribution="gaussian", position="output", widths=(4, 3), mode="srht")
GOLDEN_SRHT_FINGERPRINT = "c91bc04240d8c029e3f163f8ff5ee21899c65a234f3143c794147f8bed3a3abd"
# float32 z W_l summed block by block runs in another order than one matmul: equal to rounding, not bit for bit
RTOL, ATOL = 1e-5, 1e-6


def _spec(mode: str, **kw) -> ProjectionSpec:
    fields = {"seed": 3, "d": 37, "distribution": "gaussian", "position": "output", "widths": (5, 13, 64)}
    return ProjectionSpec(**{**fields, **kw}, mode=mode)


def test_stored_specs_keep_their_json_and_fingerprint():
    assert "mode" not in GOLDEN.to_dict()
    assert GOLDEN.canonical_json() == (
        '{"d":8,"distribution":"gaussian","position":"output","seed":7,"version":1,"widths":[4,3]}')
    assert projection.fingerprint(GOLDEN) == GOLDEN_FINGERPRINT
    old = json.loads(GOLDEN.canonical_json())  # what artifacts written before modes hold
    assert ProjectionSpec.from_dict(old) == GOLDEN and GOLDEN.mode == "stored"


def _shift_and_mask_gaussian(seed: int, stream: int, n: int, std: np.float32) -> np.ndarray:
    """The transform as first written (one 16-bit lane at a time, int64 sums): the lane-view kernel must match it."""
    words = np.random.Philox(key=np.array([seed, stream], dtype=np.uint64)).random_raw(3 * n).reshape(n, 3)
    total = np.zeros(n, dtype=np.int64)
    for shift in range(0, 64, 16):
        total += ((words >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64).sum(axis=1)
    return (2 * total - 12 * 0xFFFF).astype(np.float32) * (np.float32(std) * np.float32(2.0**-17))


def test_gaussian_kernel_and_offsets_match_the_original_transform():
    std = projection._scale(1024)
    original = _shift_and_mask_gaussian(2**63 + 5, 7, 200_003, std)
    assert projection.gaussian(2**63 + 5, 7, 200_003, std).tobytes() == original.tobytes()
    for start in (1, 3, 777, 150_000):  # offsets 3 * start words: every phase of Philox's four-word blocks
        chunk = projection.gaussian(2**63 + 5, 7, 1000, std, start=start)
        assert chunk.tobytes() == original[start:start + 1000].tobytes()


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_streamed_blocks_are_the_stored_values_bit_for_bit(distribution):
    spec = _spec("streamed", distribution=distribution)
    for layer in range(spec.num_layers):
        whole = projection.layer_projection(spec, layer)
        for max_values in (1, 7, 64, 100):  # blocks that start mid-word and mid-counter
            blocks = [b for _, b in projection.row_chunks(spec, layer, max_values)]
            assert np.concatenate(blocks).tobytes() == whole.tobytes()
    stored = _spec("stored", distribution=distribution)
    assert projection.fingerprint(spec) == projection.fingerprint(stored)
    assert spec.canonical_json() == stored.canonical_json()
    assert spec.to_dict()["mode"] == "streamed" and ProjectionSpec.from_dict(spec.to_dict()) == spec


def test_streamed_product_and_gradient_equal_stored_on_the_default_widths():
    for widths in [(384,) * 6, (1536,) * 2]:  # MiniLM-L6: output/attention, intermediate (two blocks)
        spec = ProjectionSpec(0, 1024, "gaussian", "output", widths)
        stored = Projections(projection.generate(spec))
        streamed = StreamedProjections(ProjectionSpec(0, 1024, "gaussian", "output", widths, mode="streamed"))
        g = torch.Generator().manual_seed(0)
        z0, up = torch.randn(1024, generator=g) / 32, torch.randn(len(widths), widths[0], generator=g)
        grads = []
        for proj in (stored, streamed):
            z = z0.clone().requires_grad_()
            outs = [proj.project(i, z) for i in range(len(widths))]
            sum((o * up[i]).sum() for i, o in enumerate(outs)).backward()
            grads.append((torch.stack(outs).detach(), z.grad))
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=RTOL, atol=RTOL * float(grads[0][0].abs().max()))
        torch.testing.assert_close(grads[1][1], grads[0][1], rtol=RTOL, atol=RTOL * float(grads[0][1].abs().max()))
        torch.testing.assert_close(streamed.project_back(1, up), stored.project_back(1, up), rtol=RTOL, atol=ATOL)


def test_slash_on_the_real_backbone_gives_the_same_logits_streamed(default_backbone):
    from fedrp.backbone import load_backbone

    stored = build_model(default_backbone, make_config("slash"))
    streamed = build_model(load_backbone(), make_config("slash", projection_mode="streamed"))
    assert streamed.fingerprint == stored.fingerprint and streamed.spec.mode == "streamed"
    assert not list(streamed.projections.buffers())  # nothing of size d x H is held
    batch = batch_inputs(stored.tokenizer, TEXTS, PAIRS)
    logits = []
    for model in (stored, streamed):
        with torch.no_grad():
            model.z.mul_(30)  # shifts large enough to move the logits
        out = model(**batch)
        out.square().sum().backward()
        logits.append((out.detach(), model.z.grad))
    torch.testing.assert_close(logits[1][0], logits[0][0], rtol=RTOL, atol=1e-5)
    torch.testing.assert_close(logits[1][1], logits[0][1], rtol=1e-4, atol=1e-5 * float(logits[0][1].abs().max()))


def _hadamard_reference(spec: ProjectionSpec, layer: int) -> np.ndarray:
    """W_l written out from its definition with scipy's dense Hadamard matrix, in float64."""
    bits, columns = projection.srht_parameters(spec, layer)
    n = projection.srht_size(spec.d, spec.widths[layer])
    signs = 1.0 - 2.0 * bits.astype(np.float64)
    return signs[:, None] * scipy.linalg.hadamard(n)[: spec.d][:, columns] * float(projection._scale(spec.d))


def test_fwht_is_the_sylvester_hadamard_transform():
    x = torch.randn(3, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fwht(x), x @ torch.from_numpy(scipy.linalg.hadamard(16)).double(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d, widths", [(10, (6, 16, 3)), (20, (6,)), (64, (64,))])
def test_srht_is_linear_and_equals_its_matrix(d, widths):
    spec = ProjectionSpec(1, d, "gaussian", "output", widths, mode="srht")
    proj = SRHTProjections(spec).double()
    g = torch.Generator().manual_seed(0)
    for layer, width in enumerate(widths):
        matrix = proj.matrix(layer)
        assert matrix.shape == (d, width)
        np.testing.assert_allclose(matrix.numpy(), _hadamard_reference(spec, layer), rtol=0, atol=1e-12)
        x, y = torch.randn(4, d, dtype=torch.float64, generator=g), torch.randn(4, d, dtype=torch.float64, generator=g)
        combined = 2 * proj.project(layer, x) - 3 * proj.project(layer, y)
        torch.testing.assert_close(proj.project(layer, 2 * x - 3 * y), combined)
        torch.testing.assert_close(proj.project(layer, x), x @ matrix)
        up = torch.randn(4, width, dtype=torch.float64, generator=g)
        torch.testing.assert_close(proj.project_back(layer, up), up @ matrix.T)


def test_srht_entries_have_variance_one_over_d_and_distinct_blocks():
    d = 256
    proj = SRHTProjections(ProjectionSpec(2, d, "gaussian", "output", (384, 384), mode="srht"))
    w0, w1 = proj.matrix(0), proj.matrix(1)
    assert float((w0 ** 2).mean()) * d == pytest.approx(1.0, rel=1e-6)  # entries are +-1/sqrt(d)
    assert abs(float(w0.mean())) < 3 / np.sqrt(w0.numel() * d)
    assert not torch.equal(w0, w1)
    assert set(projection.srht_parameters(proj.spec, 0)[1].tolist()) <= set(range(512))


def _reference_srht_fingerprint(spec: ProjectionSpec) -> str:
    """The docstring's definition in plain Python integers: signs from bits 0..d-1, then N words rank the columns."""
    h = hashlib.sha256(b"fedrp-projection\n" + spec.canonical_json().encode())
    for layer, width in enumerate(spec.widths):
        n, sign_words = projection.srht_size(spec.d, width), -(-spec.d // 64)
        philox = np.random.Philox(key=np.array([spec.seed, layer], dtype=np.uint64))
        words = [int(w) for w in philox.random_raw(sign_words + n)]
        bits = bytes((words[k // 64] >> (k % 64)) & 1 for k in range(spec.d))
        keys = words[sign_words:]
        columns = sorted(sorted(range(n), key=lambda i: (keys[i], i))[:width])
        h.update(b"\n" + bits + b"".join(c.to_bytes(8, "little") for c in columns))
    return h.hexdigest()


def test_srht_fingerprint_is_stable_and_its_own():
    assert projection.fingerprint(GOLDEN_SRHT) == GOLDEN_SRHT_FINGERPRINT == _reference_srht_fingerprint(GOLDEN_SRHT)
    wide = ProjectionSpec(5, 100, "rademacher", "output", (7, 130), mode="srht")  # two sign words, N > d
    assert projection.fingerprint(wide) == _reference_srht_fingerprint(wide)
    projection.srht_parameters.cache_clear()
    again = ProjectionSpec.from_dict(json.loads(json.dumps(GOLDEN_SRHT.to_dict())))
    assert projection.fingerprint(again) == GOLDEN_SRHT_FINGERPRINT
    assert GOLDEN_SRHT_FINGERPRINT != GOLDEN_FINGERPRINT
    assert '"mode":"srht"' in GOLDEN_SRHT.canonical_json()
    other_seed = ProjectionSpec(8, 8, "gaussian", "output", (4, 3), mode="srht")
    assert projection.fingerprint(other_seed) != GOLDEN_SRHT_FINGERPRINT
    with pytest.raises(ValueError, match="no matrices"):
        projection.generate(GOLDEN_SRHT)


@pytest.mark.parametrize("mode", ["streamed", "srht"])
@pytest.mark.parametrize("method", ["slash", "jrwarp"])
def test_per_sample_gradients_equal_batches_of_one_in_float64(tiny_backbone, default_tokenizer, method, mode):
    model = build(ModelSpec(method=method, d=48, projection_mode=mode), tiny_backbone("bert")).double()
    assert model.spec.mode == mode
    _random_state(model, 0)
    batch = batch_inputs(default_tokenizer, TEXTS4)
    labels = torch.tensor([1, 0, 1, 0])
    grads, _ = per_sample_gradients(model, batch, labels, _ce)
    reference = _one_by_one(model, batch, labels)
    for k in grads:
        torch.testing.assert_close(grads[k], reference[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("make", [
    lambda: ProjectionSpec(0, 8, "gaussian", "output", (4,), mode="dense"),
    lambda: make_config("slash", projection_mode="dense"),
    lambda: make_config("jrwarp", projection_mode="Streamed"),
])
def test_unknown_mode_is_refused_naming_the_modes(make):
    with pytest.raises(ValueError, match=r"projection mode must be one of \('stored', 'streamed', 'srht'\)"):
        make()


def test_artifacts_carry_the_mode_and_streamed_ones_fit_stored_models(default_backbone, tmp_path):
    from fedrp.backbone import load_backbone

    model = build_model(default_backbone, make_config("slash", d=64, projection_mode="streamed"))
    path = artifact.save(artifact.from_model(model), tmp_path / "a.safetensors")
    art = artifact.load(path)  # verifies the fingerprint by streaming
    assert art.spec.mode == "streamed" and art.config["projection_mode"] == "streamed"
    model.detach_layers()
    artifact.apply(art, build_model(load_backbone(), make_config("slash", d=64)))  # same W_l: accepted
    srht = build_model(default_backbone, make_config("slash", d=64, projection_mode="srht"))
    with pytest.raises(ValueError, match="differs"):
        artifact.apply(artifact.from_model(srht), build_model(load_backbone(), make_config("slash", d=64)))
    assert "projection_mode" not in make_config("slash").to_dict()  # stored configs read as before


def test_cli_init_takes_the_mode(tmp_path, capsys):
    from fedrp.cli import main

    out = tmp_path / "srht.safetensors"
    assert main(["init", "--d", "64", "--projection-mode", "srht", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "mode srht" in capsys.readouterr().out


def test_run_config_takes_a_projection_mode_and_refuses_unknown_ones():
    from fedrp.federation import FedConfig

    cfg = FedConfig.from_run_config({"projection-mode": "srht"})
    assert cfg.spec.projection_mode == "srht"
    with pytest.raises(ValueError, match=r"projection-mode must be one of \['stored', 'streamed', 'srht'\]"):
        FedConfig.from_run_config({"projection-mode": "dense"})
