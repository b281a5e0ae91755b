"""Per-round checkpoints: global state, server-optimizer state and round number, written atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from fedrp.files import atomic_path

_NAME = re.compile(r"round-(\d+)\.safetensors$")


def save(folder: str | Path, rnd: int, state: dict[str, np.ndarray], server_state: dict[str, np.ndarray],
         meta: dict) -> Path:
    """round-NNNN.safetensors in `folder`; a crash mid-write leaves the previous checkpoint intact."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"state/{k}": np.ascontiguousarray(v) for k, v in state.items()}
    tensors.update({f"server/{k}": np.ascontiguousarray(v) for k, v in server_state.items()})
    path = folder / f"round-{rnd:04d}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"fedrp-checkpoint": json.dumps({**meta, "round": rnd}, sort_keys=True)})
    return path


def latest(path: str | Path) -> Path:
    """The checkpoint a `resume-from` names: a file, or the newest round in a folder."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted((int(m.group(1)), p) for p in path.glob("round-*.safetensors") if (m := _NAME.search(p.name)))
    if not found:
        raise FileNotFoundError(f"no checkpoint at {path}: expected a round-NNNN.safetensors file or a folder of them")
    return found[-1][1]


def check_checkpoint(path: str | Path) -> None:
    """Refuse, from its header alone, a resume-from that names no fedrp checkpoint (an adapter, say)."""
    found = latest(path)
    try:
        with safe_open(found, framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a torn or foreign file
        raise ValueError(f"resume-from {found} is not a safetensors file ({err}): expected a fedrp checkpoint "
                         f"(runs/checkpoints/run-N/round-NNNN.safetensors, or its folder)") from None
    if "fedrp-checkpoint" not in meta:
        kind = "a fedrp adapter" if "fedrp" in meta else "another program's safetensors file"
        raise ValueError(f"resume-from {found} is {kind}, not a checkpoint: expected a round-NNNN.safetensors "
                         f"file of checkpoint-dir/run-N, or its folder")


def latest_round(folder: str | Path) -> int:
    """The newest round checkpointed in a folder; 0 when there is none."""
    try:
        return int(_NAME.search(latest(folder).name).group(1)) if Path(folder).is_dir() else 0
    except FileNotFoundError:
        return 0


def load(path: str | Path) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(round, state, server-optimizer state, metadata)."""
    path = latest(path)
    with safe_open(path, framework="numpy") as f:
        raw = (f.metadata() or {}).get("fedrp-checkpoint")
    if raw is None:
        raise ValueError(f"{path} is not a fedrp checkpoint")
    meta = json.loads(raw)
    tensors = load_file(path)
    state = {k.removeprefix("state/"): v for k, v in tensors.items() if k.startswith("state/")}
    server = {k.removeprefix("server/"): v for k, v in tensors.items() if k.startswith("server/")}
    return int(meta["round"]), state, server, meta
