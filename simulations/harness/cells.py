"""What the grid, the tuner and every benchmark share: one cache of finished cells and one federated cell runner.

A cell is one run with its settings. Its key is the canonical JSON of those settings, paths
left out, together with the version of the code its numbers come from (simulations.harness.code_version),
so a cell computed by other code is never reused silently. The cache is JSON lines of
{"key", "cell"}, a few KB a cell, appended as each cell finishes, so a sweep resumes where
it stopped; a later line for the same key wins (a retried failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from simulations.harness.code_version import code_version

PATH_KEYS = ("data-dir", "store", "checkpoint-dir", "out")  # where a cell reads and writes, not what it is


def cell_key(kind: str, settings: dict, commit: str | None = None) -> str:
    """The settings (paths left out) and the code version of this kind of cell ("federated" or "reference"),
    of the working tree or of a commit."""
    kept = {k: v for k, v in settings.items() if k not in PATH_KEYS}
    return json.dumps({"code": code_version(kind, commit), **kept}, sort_keys=True)


class CellCache:
    """Finished cells by key, read from a JSON-lines file and appended to as cells finish."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.done: dict[str, dict] = {}
        if self.path.is_file():
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                try:
                    row = json.loads(line)
                    self.done[row["key"]] = row["cell"]
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{self.path}:{number}: expected a JSON object with key and cell") from None

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def get(self, key: str) -> dict | None:
        return self.done.get(key)

    def get_or_run(self, key: str, compute: Callable[[], dict]) -> dict:
        """The cached cell, or compute's result, recorded first: what every benchmark does per cell."""
        if key not in self.done:
            print(f"running {key}", file=sys.stderr, flush=True)
            self.put(key, compute())
        return self.done[key]

    def put(self, key: str, cell: dict) -> None:
        """Record a finished cell: one line, flushed to disk before the next cell starts."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "cell": cell}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[key] = cell


def run_federation(options: dict, stderr=None) -> dict:
    """One `simulations.run --json` process with these options; its log goes to `stderr` (a file, or ours)."""
    return _run_json(["simulations.run", "--json"], options, stderr)


def run_reference(options: dict, stderr=None) -> dict:
    """One `fedrp train --json` process (a centralized run) with these options; its log goes to `stderr`."""
    return _run_json(["fedrp", "train", "--json", "--overwrite"], options, stderr)


def _run_json(command: list[str], options: dict, stderr) -> dict:
    """`python -m <command> --key=value ...`; the JSON object its last stdout line holds."""
    cmd = [sys.executable, "-m", *command, *(f"--{k}={v}" for k, v in options.items())]
    print("running", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=stderr, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def condense(cell: dict, result: dict) -> dict:
    """The server's dev metrics per round and the bytes; the accuracy fields only where the task has accuracy."""
    rounds = [r for r in result["rounds"] if r["round"] > 0]
    out = {
        **cell, "status": result["status"], "store": result["store"], "run_id": result["run_id"],
        "initial_metrics": result["rounds"][0]["metrics"], "metrics": [r["metrics"] for r in rounds],
        "bytes_up_per_client": [r["bytes_up_accepted"] / max(r["accepted"], 1) for r in rounds],  # refused left out
        "wall_seconds": [round(r["wall_seconds"], 2) for r in rounds],
        "final_metrics": result["final_metrics"],
        "refused": sum(r["refused"] for r in rounds),
    }
    if "accuracy" in result["final_metrics"]:
        accuracy = [m["accuracy"] for m in out["metrics"] if "accuracy" in m]  # rounds evaluated (eval-every)
        out.update(initial_accuracy=out["initial_metrics"]["accuracy"], accuracy=accuracy,
                   final_accuracy=result["final_metrics"]["accuracy"], best_accuracy=max(accuracy))
    return out
