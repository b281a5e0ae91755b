"""On-disk caches under $FEDRP_CACHE for work a fresh process would redo on every message.

A SuperNode starts a new ClientApp process per message, so projections and partitions
computed in memory would be rebuilt each round. Files are written atomically and carry a
sha256 of their arrays; a file that fails the check is rebuilt, never trusted, and a cache
that cannot be written only costs the rebuild.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fedrp.files import atomic_path

CACHE_ENV = "FEDRP_CACHE"
log = logging.getLogger("fedrp.cache")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "fedrp"))


def key(*parts: object) -> str:
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:24]


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_or_build(kind: str, name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached as kind/name, or build() stored there for the next process."""
    path = cache_root() / kind / f"{name}.safetensors"
    try:
        with safe_open(path, framework="numpy") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            stored = (f.metadata() or {}).get("sha256")
        if stored == digest(arrays):
            return arrays
        log.warning("cache file %s failed its checksum; rebuilding it", path)
    except FileNotFoundError:
        pass
    except (SafetensorError, OSError) as err:
        log.warning("cache file %s is unreadable (%s); rebuilding it", path, err)
    arrays = build()
    try:
        with atomic_path(path, mode=0o644) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata={"sha256": digest(arrays)})
    except OSError as err:
        log.warning("could not write cache file %s (%s); continuing without it", path, err)
    return arrays
