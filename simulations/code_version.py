"""The version of the code that decides a cell's numbers, for benchmark cache keys.

A cached cell is reused only while the modules that train, aggregate and evaluate are byte for
byte what produced it; the command line, the CLI and the pages around them may change freely.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a cell's metrics depend on: the method, data, partitions, local training, the round loop.
RESULT_CODE = ("fedrp", "clients/client_app.py", "server/rounds.py", "server/strategy.py", "simulations/inprocess.py",
               "simulations/run.py")
NOT_RESULT_CODE = {"fedrp/cli.py", "fedrp/export.py", "fedrp/predict.py", "fedrp/artifact.py"}


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex digits) over the paths and bytes of the result-deciding source files."""
    digest = hashlib.sha256()
    for path in _files():
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _files() -> list[Path]:
    files: list[Path] = []
    for name in RESULT_CODE:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [p for p in files if str(p.relative_to(ROOT)) not in NOT_RESULT_CODE]
