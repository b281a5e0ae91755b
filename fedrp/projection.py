"""Seeded random projections W_l that are bit-identical on every machine.

Values come from the raw output of numpy's Philox4x64 counter-based generator (a stream
numpy keeps stable across versions) through transforms built only from integer arithmetic
and a single correctly rounded float32 multiply. ``Generator.normal`` or ``torch.randn``
would be shorter, but their samplers (ziggurat, log/sin/cos) may change between versions
or differ in the last bit between SIMD paths, and every client must rebuild the same W_l.

Three modes, one per memory budget. "stored" holds every W_l (d x H float32 each: 2 GiB for
32 blocks of H = d = 4096). "streamed" regenerates the same W_l, bit for bit, a block of rows
at a time whenever z W_l or g W_l^T is needed, so it shares the stored fingerprint. "srht" is
a different, structured projection (see `srht_parameters`) kept as d signs and H indices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from fedrp import cache

DISTRIBUTIONS = ("gaussian", "rademacher")
MODES = ("stored", "streamed", "srht")
STORED_VALUES = ("stored", "streamed")  # modes that build the very same W_l: one projection, one fingerprint
TRANSFORM_VERSION = 1

# Stream ids beyond any layer index, for the deterministic initial values of z and the head.
Z_INIT_STREAM = 2**32
HEAD_INIT_STREAM = 2**32 + 1

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
    mode: str = "stored"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"projection seed must be an integer in [0, 2**64), got {self.seed!r}")
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"projection dimension d must be a positive integer, got {self.d!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if not isinstance(self.position, str) or not self.position:  # which positions exist, each method says
            raise ValueError(f"position must name where the vectors enter (a method's position), got {self.position!r}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of positive layer widths, got {self.widths!r}")
        if self.mode not in MODES:
            raise ValueError(f"projection mode must be one of {MODES}, got {self.mode!r}")
        if self.version != TRANSFORM_VERSION:
            raise ValueError(
                f"projection transform version {self.version} is not supported "
                f"(this fedrp builds version {TRANSFORM_VERSION})"
            )

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict:
        """The spec as JSON data; "mode" only when not "stored", so older specs read and hash as before."""
        data = {**dataclasses.asdict(self), "widths": list(self.widths)}
        if self.mode == "stored":
            del data["mode"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ProjectionSpec:
        expected = {f.name for f in dataclasses.fields(cls)}
        missing = {"seed", "d", "distribution", "position", "widths"} - set(data)
        unknown = set(data) - expected
        if missing or unknown:
            raise ValueError(
                f"projection spec needs keys {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls(**data)

    def canonical_json(self) -> str:
        """What the fingerprint, the cache and a run's identity hash: the projection, not how it is held.

        "streamed" builds the stored W_l, so it drops its mode here and a streaming device matches a
        storing one; "srht" keeps it, being another projection.
        """
        data = self.to_dict()
        if self.mode in STORED_VALUES:
            data.pop("mode", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _raw_bits(seed: int, stream: int, n_words: int, offset: int = 0) -> np.ndarray:
    """Words offset .. offset + n_words of Philox4x64-10 keyed by (seed, stream), counter starting at 0.

    Each counter step yields four words and `advance(k)` skips k steps, so a chunk starts where
    the whole stream would be without drawing what comes before it.
    """
    key = np.array([seed, stream], dtype=np.uint64)
    gen = np.random.Philox(key=key)
    if offset >= 4:
        gen.advance(offset // 4)
    skip = offset % 4
    return gen.random_raw(skip + n_words)[skip:]


def _scale(d: int) -> np.float32:
    # One correctly rounded float32 sqrt and one division: identical under IEEE 754 everywhere.
    return np.float32(1.0) / np.sqrt(np.float32(d))


def gaussian(seed: int, stream: int, n: int, std: np.float32, start: int = 0) -> np.ndarray:
    """Values start .. start + n of the stream's approximately N(0, std^2) float32 values.

    Each value is a centred Irwin-Hall sum of the twelve 16-bit lanes of three raw words
    (summed as uint16 views: the same set of lanes in either byte order, five times faster than
    shifting and masking). S and 2*S - 12*65535 are integers below 2**24, exact in float32, and
    after division by 2**17 exactly representable; the one multiply by std is the only rounding.
    """
    lanes = _raw_bits(seed, stream, 3 * n, offset=3 * start).view(np.uint16).reshape(n, 12)
    total = lanes[:, 0].astype(np.uint32)
    for k in range(1, 12):
        total += lanes[:, k]
    centred = total.astype(np.float32) * np.float32(2.0) - np.float32(_IRWIN_HALL_TERMS * 0xFFFF)
    factor = np.float32(std) * np.float32(2.0**-17)
    return centred * factor


def _bits(seed: int, stream: int, n: int, start: int = 0) -> np.ndarray:
    """Bits start .. start + n of the stream as uint8 0/1: bit k is bit k % 64 of word k // 64."""
    first, last = start // 64, -(-(start + n) // 64)
    words = _raw_bits(seed, stream, last - first, offset=first)
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    skip = start - 64 * first
    return bits.reshape(-1)[skip:skip + n].astype(np.uint8)


def rademacher(seed: int, stream: int, n: int, std: np.float32, start: int = 0) -> np.ndarray:
    """Values start .. start + n of the stream's float32 +-std, one raw bit each."""
    signs = np.float32(1.0) - np.float32(2.0) * _bits(seed, stream, n, start).astype(np.float32)
    return signs * np.float32(std)


_SAMPLERS = {"gaussian": gaussian, "rademacher": rademacher}
CHUNK_VALUES = 2**18  # values per streamed block of rows: a few MiB of temporaries while generating


def layer_projection(spec: ProjectionSpec, layer: int) -> np.ndarray:
    """W_l of shape (d, widths[l]), variance 1/d; each layer has its own stream."""
    width = spec.widths[layer]
    values = _SAMPLERS[spec.distribution](spec.seed, layer, spec.d * width, _scale(spec.d))
    return values.reshape(spec.d, width)


def row_chunks(spec: ProjectionSpec, layer: int, max_values: int = CHUNK_VALUES) -> Iterator[tuple[int, np.ndarray]]:
    """W_l as consecutive blocks of rows (first row, block): layer_projection's values, never all at once."""
    width = spec.widths[layer]
    rows = max(1, max_values // width)
    for r0 in range(0, spec.d, rows):
        r1 = min(spec.d, r0 + rows)
        values = _SAMPLERS[spec.distribution](spec.seed, layer, (r1 - r0) * width, _scale(spec.d), start=r0 * width)
        yield r0, values.reshape(r1 - r0, width)


@lru_cache(maxsize=4)
def generate(spec: ProjectionSpec) -> tuple[np.ndarray, ...]:
    """All W_l of a spec, read-only, cached per process and on disk (checksummed)."""
    if spec.mode not in STORED_VALUES:
        raise ValueError(f"a {spec.mode!r} projection has no matrices to generate; it is applied as a transform")

    def build() -> dict[str, np.ndarray]:
        return {f"W{layer}": layer_projection(spec, layer) for layer in range(spec.num_layers)}

    arrays = cache.load_or_build("projections", cache.key(spec.canonical_json()), build)
    mats = tuple(arrays[f"W{layer}"] for layer in range(spec.num_layers))
    for m in mats:
        m.setflags(write=False)
    return mats


def fingerprint(spec: ProjectionSpec) -> str:
    """Hex sha256 over the canonical spec and the little-endian float32 bytes of every W_l.

    A "streamed" spec hashes the same bytes row block by row block (the same digest as "stored");
    an "srht" spec hashes its signs and indices instead (`srht_fingerprint`).
    """
    if spec.mode == "srht":
        return srht_fingerprint(spec)
    if spec.mode == "streamed":
        return _streamed_fingerprint(spec)
    return _stored_fingerprint(spec)


@lru_cache(maxsize=64)
def _stored_fingerprint(spec: ProjectionSpec) -> str:
    """Kept per spec for the process (as the streamed one): a server loading a thousand adapters of one
    federation hashes its projections once, not twice per adapter."""
    h = hashlib.sha256(b"fedrp-projection\n")
    h.update(spec.canonical_json().encode())
    for m in generate(spec):
        h.update(b"\n")
        h.update(np.ascontiguousarray(m, dtype="<f4").tobytes())
    return h.hexdigest()


@lru_cache(maxsize=8)
def _streamed_fingerprint(spec: ProjectionSpec) -> str:
    """The stored fingerprint, fed one block of rows at a time: rows in order concatenate to W_l's bytes."""
    h = hashlib.sha256(b"fedrp-projection\n")
    h.update(spec.canonical_json().encode())
    for layer in range(spec.num_layers):
        h.update(b"\n")
        for _, block in row_chunks(spec, layer):
            h.update(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return h.hexdigest()


def srht_size(d: int, width: int) -> int:
    """N = 2^ceil(log2(max(d, H))): the Hadamard length z is padded to."""
    return 1 << (max(d, width) - 1).bit_length()


@lru_cache(maxsize=64)
def srht_parameters(spec: ProjectionSpec, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Block l's SRHT as (sign bits, uint8 (d,), 1 meaning -1; selected columns, int64 (H,) ascending).

    W_l = diag(1 - 2 bits) Hadamard_N[:d, columns] / sqrt(d), Hadamard_N the unnormalised
    Sylvester matrix: entries +-1/sqrt(d), variance 1/d like the Gaussian W_l. Both come from the
    block's own Philox stream, integers only: bits 0 .. d-1 are the signs, the next N words after
    them rank the N columns (a stable argsort of the words; ties would need equal 64-bit words)
    and the first H ranked are kept. The distribution field does not enter: entries are +-1/sqrt(d).
    """
    width = spec.widths[layer]
    n = srht_size(spec.d, width)
    sign_words = -(-spec.d // 64)
    bits = _bits(spec.seed, layer, spec.d)
    keys = _raw_bits(spec.seed, layer, n, offset=sign_words)
    columns = np.sort(np.argsort(keys, kind="stable")[:width]).astype(np.int64)
    for a in (bits, columns):
        a.setflags(write=False)
    return bits, columns


def srht_fingerprint(spec: ProjectionSpec) -> str:
    """Hex sha256 of b"fedrp-projection\n", the canonical spec (naming "srht"), then per block
    b"\n", the d sign bits as bytes (0 for +1, 1 for -1) and the H selected columns as
    little-endian int64: all that W_l is made of besides d, N and the fixed Hadamard matrix."""
    h = hashlib.sha256(b"fedrp-projection\n")
    h.update(spec.canonical_json().encode())
    for layer in range(spec.num_layers):
        bits, columns = srht_parameters(spec, layer)
        h.update(b"\n")
        h.update(bits.astype(np.uint8).tobytes())
        h.update(columns.astype("<i8").tobytes())
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
