"""The projections are a pure function of the spec, identical in every process and version."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fedrp import cache, projection
from fedrp.projection import ProjectionSpec

GOLDEN = ProjectionSpec(seed=7, d=8, distribution="gaussian", position="output", widths=(4, 3))
GOLDEN_FINGERPRINT = "fab2a3d210e6b49a24481d7c9d86c4a2c8f41036505940f301def36cfcc0d4fe"
GOLDEN_RADEMACHER = ProjectionSpec(seed=7, d=8, distribution="rademacher", position="intermediate", widths=(5,))
GOLDEN_RADEMACHER_FINGERPRINT = "c598068e35dd0d06210a6c105323b342a12fb9d46a16eba539b0f229e7a38f81"


def test_golden_fingerprints():
    assert projection.fingerprint(GOLDEN) == GOLDEN_FINGERPRINT
    assert projection.fingerprint(GOLDEN_RADEMACHER) == GOLDEN_RADEMACHER_FINGERPRINT


def test_same_projection_in_another_process(tmp_path, monkeypatch):
    """Each process regenerates the projection into its own empty cache: nothing is read back from the other."""
    spec = ProjectionSpec(seed=123, d=256, distribution="gaussian", position="output", widths=(384,) * 6)
    code = (
        "from fedrp.projection import ProjectionSpec, fingerprint;"
        "print(fingerprint(ProjectionSpec(seed=123, d=256, distribution='gaussian', position='output', widths=(384,)*6)))"
    )
    env = {**os.environ, cache.CACHE_ENV: str(tmp_path / "child")}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.strip()
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "parent"))
    projection.generate.cache_clear()
    try:
        mine = projection.fingerprint(spec)
    finally:
        projection.generate.cache_clear()  # later tests read the usual cache again
    assert other == mine
    assert [len(list((tmp_path / side).rglob("*"))) > 0 for side in ("child", "parent")] == [True, True]


def _reference_gaussian(seed: int, stream: int, index: int, std: float) -> np.float32:
    """The transform written out in scalar Python integers, independent of numpy's vector paths."""
    words = np.random.Philox(key=np.array([seed, stream], dtype=np.uint64)).random_raw(3 * (index + 1))
    total = sum((int(w) >> s) & 0xFFFF for w in words[3 * index: 3 * index + 3] for s in (0, 16, 32, 48))
    return np.float32(2 * total - 12 * 0xFFFF) * (np.float32(std) * np.float32(2.0**-17))


def test_gaussian_matches_scalar_reference_bit_for_bit():
    spec = ProjectionSpec(seed=5, d=16, distribution="gaussian", position="output", widths=(6, 6))
    w1 = projection.layer_projection(spec, 1).reshape(-1)
    std = np.float32(1.0) / np.sqrt(np.float32(16))
    for i in (0, 1, 17, 95):
        assert w1[i].tobytes() == _reference_gaussian(5, 1, i, std).tobytes()


def test_scale_and_moments():
    d = 512
    g = projection.layer_projection(ProjectionSpec(1, d, "gaussian", "output", (384,)), 0)
    r = projection.layer_projection(ProjectionSpec(1, d, "rademacher", "output", (384,)), 0)
    assert g.dtype == np.float32 and g.shape == (d, 384)
    assert abs(g.mean()) < 2e-3 / np.sqrt(d) * 10
    assert g.var() * d == pytest.approx(1.0, abs=0.02)
    # Irwin-Hall: kurtosis 3 - 1.2/12 = 2.9, close to the normal's 3
    assert ((g - g.mean()) ** 4).mean() / g.var() ** 2 == pytest.approx(2.9, abs=0.05)
    assert set(np.unique(r).tolist()) == {float(np.float32(1 / np.sqrt(np.float32(d)))), float(-np.float32(1 / np.sqrt(np.float32(d))))}
    assert abs(r.mean()) < 0.01 / np.sqrt(d)


def test_layers_and_seeds_give_different_streams():
    a = projection.generate(ProjectionSpec(0, 64, "gaussian", "output", (32, 32)))
    b = projection.generate(ProjectionSpec(1, 64, "gaussian", "output", (32, 32)))
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], b[0])
    # a layer's values do not depend on the other layers' widths (block-by-block generation)
    c = projection.generate(ProjectionSpec(0, 64, "gaussian", "output", (32, 99)))
    assert np.array_equal(a[0], c[0])


def test_fingerprint_covers_every_spec_field():
    base = ProjectionSpec(0, 16, "gaussian", "output", (8, 8))
    variants = [
        ProjectionSpec(1, 16, "gaussian", "output", (8, 8)),
        ProjectionSpec(0, 17, "gaussian", "output", (8, 8)),
        ProjectionSpec(0, 16, "rademacher", "output", (8, 8)),
        ProjectionSpec(0, 16, "gaussian", "attention", (8, 8)),
        ProjectionSpec(0, 16, "gaussian", "output", (8, 8, 8)),
    ]
    prints = {projection.fingerprint(s) for s in [base, *variants]}
    assert len(prints) == 6


def test_wrong_fingerprint_is_refused():
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        projection.check_fingerprint(GOLDEN, "0" * 64)
    projection.check_fingerprint(GOLDEN, projection.fingerprint(GOLDEN))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seed=-1), "seed"),
        (dict(d=0), "dimension d"),
        (dict(distribution="uniform"), "distribution must be one of"),
        (dict(position=""), "position must name where"),
        (dict(widths=()), "widths"),
    ],
)
def test_bad_spec_is_refused_with_what_was_expected(kwargs, message):
    fields = dict(seed=0, d=8, distribution="gaussian", position="output", widths=(4,))
    with pytest.raises(ValueError, match=message):
        ProjectionSpec(**{**fields, **kwargs})


def test_spec_round_trips_through_dict_and_refuses_unknown_keys():
    assert ProjectionSpec.from_dict(GOLDEN.to_dict()) == GOLDEN
    with pytest.raises(ValueError, match="unknown"):
        ProjectionSpec.from_dict({**GOLDEN.to_dict(), "extra": 1})


def test_initial_values_are_deterministic_with_variance_one_over_d():
    spec = ProjectionSpec(3, 4096, "gaussian", "output", (8,))
    z = projection.initial_z(spec)
    assert np.array_equal(z, projection.initial_z(spec))
    assert z.var() * 4096 == pytest.approx(1.0, abs=0.08)
