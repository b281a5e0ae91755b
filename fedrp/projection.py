"""Seeded random projections W_l that are bit-identical on every machine.

Values come from the raw output of numpy's Philox4x64 counter-based generator (a stream
numpy keeps stable across versions) through transforms built only from integer arithmetic
and a single correctly rounded float32 multiply. ``Generator.normal`` or ``torch.randn``
would be shorter, but their samplers (ziggurat, log/sin/cos) may change between versions
or differ in the last bit between SIMD paths, and every client must rebuild the same W_l.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache

import numpy as np

from fedrp import cache

DISTRIBUTIONS = ("gaussian", "rademacher")
POSITIONS = ("output", "intermediate", "attention", "prompt")
TRANSFORM_VERSION = 1

# Stream ids beyond any layer index, for the deterministic initial values of z and the head.
Z_INIT_STREAM = 2**32
HEAD_INIT_STREAM = 2**32 + 1

_MASK16 = np.uint64(0xFFFF)
_IRWIN_HALL_TERMS = 12  # sum of 12 uniforms has variance 1 once centred: a classic normal proxy


@dataclasses.dataclass(frozen=True)
class ProjectionSpec:
    """Everything a device needs to regenerate the projections: they never travel."""

    seed: int
    d: int
    distribution: str
    position: str
    widths: tuple[int, ...]
    version: int = TRANSFORM_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"projection seed must be an integer in [0, 2**64), got {self.seed!r}")
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"projection dimension d must be a positive integer, got {self.d!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of positive layer widths, got {self.widths!r}")
        if self.version != TRANSFORM_VERSION:
            raise ValueError(
                f"projection transform version {self.version} is not supported "
                f"(this fedrp builds version {TRANSFORM_VERSION})"
            )

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> "ProjectionSpec":
        expected = {f.name for f in dataclasses.fields(cls)}
        missing = {"seed", "d", "distribution", "position", "widths"} - set(data)
        unknown = set(data) - expected
        if missing or unknown:
            raise ValueError(
                f"projection spec needs keys {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(**data)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


def _raw_bits(seed: int, stream: int, n_words: int) -> np.ndarray:
    """n_words uint64 from Philox4x64-10 keyed by (seed, stream), counter starting at 0."""
    key = np.array([seed, stream], dtype=np.uint64)
    return np.random.Philox(key=key).random_raw(n_words)


def _scale(d: int) -> np.float32:
    # One correctly rounded float32 sqrt and one division: identical under IEEE 754 everywhere.
    return np.float32(1.0) / np.sqrt(np.float32(d))


def gaussian(seed: int, stream: int, n: int, std: np.float32) -> np.ndarray:
    """n approximately N(0, std^2) float32 values: a centred Irwin-Hall sum of 12 uniforms.

    Each value sums twelve 16-bit uniforms (three raw words). 2*S - 12*65535 is an exact
    integer below 2**20, so after division by 2**17 it is exactly representable; the one
    float32 multiply by std is the only rounding.
    """
    words = _raw_bits(seed, stream, 3 * n).reshape(n, 3)
    total = np.zeros(n, dtype=np.int64)
    for shift in range(0, 64, 16):
        total += ((words >> np.uint64(shift)) & _MASK16).astype(np.int64).sum(axis=1)
    centred = 2 * total - _IRWIN_HALL_TERMS * 0xFFFF
    factor = np.float32(std) * np.float32(2.0**-17)
    return centred.astype(np.float32) * factor


def rademacher(seed: int, stream: int, n: int, std: np.float32) -> np.ndarray:
    """n float32 values of +-std, one raw bit each."""
    words = _raw_bits(seed, stream, -(-n // 64))
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    signs = np.float32(1.0) - np.float32(2.0) * bits.reshape(-1)[:n].astype(np.float32)
    return signs * np.float32(std)


_SAMPLERS = {"gaussian": gaussian, "rademacher": rademacher}


def layer_projection(spec: ProjectionSpec, layer: int) -> np.ndarray:
    """W_l of shape (d, widths[l]), variance 1/d; each layer has its own stream."""
    width = spec.widths[layer]
    values = _SAMPLERS[spec.distribution](spec.seed, layer, spec.d * width, _scale(spec.d))
    return values.reshape(spec.d, width)


@lru_cache(maxsize=4)
def generate(spec: ProjectionSpec) -> tuple[np.ndarray, ...]:
    """All W_l of a spec, read-only, cached per process and on disk (checksummed)."""
    def build() -> dict[str, np.ndarray]:
        return {f"W{layer}": layer_projection(spec, layer) for layer in range(spec.num_layers)}

    arrays = cache.load_or_build("projections", cache.key(spec.canonical_json()), build)
    mats = tuple(arrays[f"W{layer}"] for layer in range(spec.num_layers))
    for m in mats:
        m.setflags(write=False)
    return mats


def fingerprint(spec: ProjectionSpec) -> str:
    """Hex sha256 over the canonical spec and the little-endian float32 bytes of every W_l."""
    h = hashlib.sha256(b"fedrp-projection\n")
    h.update(spec.canonical_json().encode())
    for m in generate(spec):
        h.update(b"\n")
        h.update(np.ascontiguousarray(m, dtype="<f4").tobytes())
    return h.hexdigest()


def check_fingerprint(spec: ProjectionSpec, expected: str) -> None:
    """Refuse a spec whose regenerated projections do not match the fingerprint sent along."""
    actual = fingerprint(spec)
    if actual != expected:
        raise ValueError(
            f"projection fingerprint mismatch: expected {expected}, this device builds {actual} "
            f"for spec {spec.canonical_json()}"
        )


def initial_z(spec: ProjectionSpec) -> np.ndarray:
    """Deterministic z_0 ~ N(0, 1/d), so every run with one seed starts from one point."""
    return _SAMPLERS["gaussian"](spec.seed, Z_INIT_STREAM, spec.d, _scale(spec.d))


def initial_head(spec: ProjectionSpec, num_labels: int, hidden: int, std: float) -> np.ndarray:
    """Deterministic head weights ~ N(0, std^2) of shape (num_labels, hidden)."""
    values = _SAMPLERS["gaussian"](spec.seed, HEAD_INIT_STREAM, num_labels * hidden, np.float32(std))
    return values.reshape(num_labels, hidden)
