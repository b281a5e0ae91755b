"""The on-disk caches a fresh ClientApp process reads instead of rebuilding: checksummed, never trusted blindly."""

from __future__ import annotations

import numpy as np
import pytest

from fedrp import cache, projection
from fedrp.federation.clientdata import _partitions

SPEC = projection.ProjectionSpec(seed=11, d=64, distribution="gaussian", position="output", widths=(32, 48))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    projection.generate.cache_clear()
    _partitions.cache_clear()
    yield tmp_path
    projection.generate.cache_clear()
    _partitions.cache_clear()


def _regenerate() -> tuple[np.ndarray, ...]:
    projection.generate.cache_clear()
    return projection.generate(SPEC)


def test_projections_are_cached_and_read_back_bit_for_bit(cache_dir):
    built = projection.generate(SPEC)
    files = list((cache_dir / "projections").glob("*.safetensors"))
    assert len(files) == 1
    read = _regenerate()
    fresh = [projection.layer_projection(SPEC, layer) for layer in range(SPEC.num_layers)]
    for a, b, c in zip(built, read, fresh):
        assert a.tobytes() == b.tobytes() == c.tobytes()
        assert not b.flags.writeable


def test_a_corrupted_projection_file_is_rebuilt_not_used(cache_dir):
    expected = projection.fingerprint(SPEC)
    path = next((cache_dir / "projections").glob("*.safetensors"))
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the last matrix
    path.write_bytes(bytes(raw))
    _regenerate()
    assert projection.fingerprint(SPEC) == expected
    path.write_bytes(b"not a safetensors file")
    _regenerate()
    assert projection.fingerprint(SPEC) == expected
    assert path.stat().st_size > 1000  # rewritten with the rebuilt arrays


def test_an_unwritable_cache_costs_only_the_rebuild(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker))
    projection.generate.cache_clear()
    try:
        mats = projection.generate(SPEC)
    finally:
        projection.generate.cache_clear()
    assert mats[1].shape == (64, 48)


def test_partitions_are_cached_and_identical(cache_dir):
    labels = tuple(int(x) for x in np.random.default_rng(0).integers(0, 2, 500))
    first = _partitions("sst2", labels, 5, "dirichlet", 0.5, 3, 10)
    assert len(list((cache_dir / "partitions").glob("*.safetensors"))) == 1
    _partitions.cache_clear()
    second = _partitions("sst2", labels, 5, "dirichlet", 0.5, 3, 10)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert sorted(np.concatenate(second).tolist()) == list(range(500))
    _partitions("sst2", labels, 5, "dirichlet", 0.1, 3, 10)  # another alpha: another file
    assert len(list((cache_dir / "partitions").glob("*.safetensors"))) == 2
