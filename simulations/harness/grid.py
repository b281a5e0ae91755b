"""The GLUE grid: task x Dirichlet alpha x method through the federation, plus a centralized reference per task.

    python -m simulations.harness.grid --config simulations/harness/grid.toml                 # every cell not yet cached
    python -m simulations.harness.grid --only task=rte,method=slash,alpha=1.0         # one cell and RTE's reference
    python -m simulations.harness.grid --dry-run                                      # the cells, and which are cached
    python -m simulations.harness.results_page --config simulations/harness/grid.toml         # docs/RESULTS.md from the cache

One TOML file fixes the grid (simulations/harness/grid.toml). Every cell is one process: `python -m
simulations.run --json` for a federated cell, `python -m fedrp train --json` for a task's
centralized reference. Each finished or failed cell is appended to the cache (JSON lines, keyed
by the canonical JSON of the cell's settings, paths left out) and skipped when asked for again,
so an interrupted sweep resumes; a failed cell is retried only with --retry-failed.

QNLI has only its dev set here: the grid splits it by a seeded hash, stratified by label, into a
training part and a held-out part, written as a derived GLUE folder (QNLI/train.tsv, dev.tsv)
under the config's [qnli] dir, and points QNLI's cells there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from fedrp import glue
from fedrp.payload import error_line
from simulations.harness.cells import CellCache, condense, run_federation, run_reference
from simulations.harness.cells import cell_key as settings_key  # grid.cell_key names the grid's own
from simulations.harness.code_version import changed_modules, code_version
from simulations.harness.grid_config import (
    DEFAULT_CONFIG,
    KINDS,
    Grid,
    cells,
    data_dir_for,
    load_config,
    task_label,
    write_qnli_split,
)

FILTER_FIELDS = ("kind", "task", "method", "alpha", "seed")


def cell_key(cell: dict, commit: str | None = None) -> str:
    """A cell's identity in the cache: the canonical JSON of its settings and the version of the code that
    runs it (the working tree's, or a commit's)."""
    return settings_key(cell["kind"], {k: cell[k] for k in ("kind", "task", "method", "alpha", "data", "options")},
                        commit)


def versions(grid: Grid) -> dict[str, str]:
    """The code version per kind of cell that the grid reports: its pinned commit's, else the working tree's."""
    return {kind: code_version(kind, grid.commit) for kind in KINDS}


def changed_since_pin(grid: Grid) -> list[str]:
    """The result modules whose code differs between the pinned commit and this tree (none when unpinned)."""
    if grid.commit is None:
        return []
    return sorted({m for kind in KINDS for m in changed_modules(kind, grid.commit)})


def unpinned_code(grid: Grid) -> str | None:
    """Why this tree cannot run the pinned grid's cells (its result code differs from the commit's), or None."""
    changed = changed_since_pin(grid)
    if not changed:
        return None
    return (f"{grid.config} pins the grid to commit {grid.commit}, and this tree's result code differs from it "
            f"({', '.join(changed)}); run the grid in a worktree of that commit (git worktree add --detach "
            f"../fedrp-grid {grid.commit}) and append its new cache rows here, or pin the current commit")


def describe(cell: dict) -> str:
    """One line naming a cell (and its data seed, where not the grid's own 0)."""
    seed = f" seed={cell['seed']}" if cell.get("seed") else ""
    if cell["kind"] == "reference":
        return f"{cell['task']:5} {cell['method']:7} centralized reference{seed}"
    return f"{cell['task']:5} {cell['method']:7} alpha={cell['alpha']:g}{seed}"


def parse_only(specs: list[str], grid: Grid) -> dict[str, set]:
    """`task=rte,method=slash,alpha=1.0` (a field repeated: any of its values) -> allowed values per field."""
    allowed = {"kind": set(KINDS), "task": set(grid.tasks), "method": set(grid.methods), "alpha": set(grid.alphas),
               "seed": {0, *grid.seeds.seeds}}
    filters: dict[str, set] = {}
    for item in (s.strip() for spec in specs for s in spec.split(",") if s.strip()):
        field, sep, value = item.partition("=")
        field = field.strip()
        if not sep or field not in FILTER_FIELDS:
            raise ValueError(f"--only {item!r}: expected FIELD=VALUE with FIELD one of {list(FILTER_FIELDS)}")
        parsed = _filter_value(field, value.strip())
        if parsed not in allowed[field]:
            raise ValueError(f"--only {item!r}: {value.strip()!r} is not among the grid's {field} values "
                             f"{sorted(allowed[field], key=str)}")
        filters.setdefault(field, set()).add(parsed)
    return filters


def _filter_value(field: str, value: str):
    if field in ("alpha", "seed"):
        try:
            return float(value) if field == "alpha" else int(value)
        except ValueError:
            raise ValueError(f"--only {field}={value!r}: expected a number") from None
    if field == "task":
        try:
            return glue.get_task(value).name
        except ValueError as err:
            raise ValueError(f"--only task={value!r}: {err}") from None
    return value


def select(all_cells: list[dict], filters: dict[str, set]) -> list[dict]:
    """The cells the filters allow; method and alpha filters pick federated cells, a task keeps its reference."""
    def ok(cell: dict) -> bool:
        return all(cell[f] in values for f, values in filters.items()
                   if not (cell["kind"] == "reference" and f in ("method", "alpha")))
    return [c for c in all_cells if ok(c)]


# ---- running cells ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a sweep's run store, checkpoints, logs and artifacts go: the scratch folder (not the repository)."""

    scratch: Path

    @property
    def store(self) -> Path:
        return self.scratch / "grid.sqlite"

    @property
    def checkpoints(self) -> Path:
        return self.scratch / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.scratch / "logs"

    @property
    def artifacts(self) -> Path:
        return self.scratch / "artifacts"


class CellFailed(RuntimeError):
    """A cell's process failed; the message is its error's last line."""


def run_one(cell: dict, grid: Grid, paths: Paths) -> dict:
    """Run a cell in its own process with its log in a file; a failure raises CellFailed with the error's last line."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    alpha = "ref" if cell["alpha"] is None else f"a{cell['alpha']:g}"
    digest = hashlib.sha256(cell_key(cell).encode()).hexdigest()[:8]
    log_path = paths.logs / f"{cell['task']}-{cell['method']}-{alpha}-{digest}.log"
    print(f"cell {describe(cell)}: log {log_path}", file=sys.stderr, flush=True)
    with log_path.open("w") as log:
        try:
            run = _federated if cell["kind"] == "federated" else _reference
            result = run(cell, data_dir_for(grid, cell["task"]), paths, log)
        except subprocess.CalledProcessError as err:
            log.flush()
            raise CellFailed(f"exit status {err.returncode}: {error_line(log_path.read_text())}") from None
    return {**result, "log": str(log_path)}


def _federated(cell: dict, data_dir: Path, paths: Paths, log) -> dict:
    """One `simulations.run` federation; the summary condensed, plus totals and the trainable-parameter count."""
    options = {**cell["options"], "task": cell["task"], "method": cell["method"], "alpha": cell["alpha"]}
    common = {"data-dir": str(data_dir), "store": str(paths.store.resolve()),
              "checkpoint-dir": str(paths.checkpoints.resolve())}
    result = run_federation({**common, **options}, stderr=log)
    row = condense({}, result)
    rounds = [r for r in result["rounds"] if r["round"] > 0]
    row.update(bytes_up_total=[r["bytes_up"] for r in rounds], accepted=[r["accepted"] for r in rounds],
               params=int(max(row["bytes_up_per_client"])) // 4)  # every payload value is float32 (fedrp.payload)
    prune_checkpoints(paths.checkpoints / f"run-{result['run_id']}")
    return row


def _reference(cell: dict, data_dir: Path, paths: Paths, log) -> dict:
    """One `fedrp train --json` run; its dev metrics and sizes."""
    options = {**cell["options"], "task": cell["task"], "method": cell["method"], "data-dir": str(data_dir),
               "out": str(paths.artifacts.resolve())}
    r = run_reference(options, stderr=log)
    keep = ("params", "bytes_fp32", "train_examples", "eval_examples", "lr", "epochs", "samples_per_second",
            "wall_seconds", "bf16", "device", "backbone")
    return {"status": "completed", "final_metrics": r["metrics"], **{k: r[k] for k in keep}}


def prune_checkpoints(folder: Path) -> None:
    """Keep a finished run's last checkpoint only: full finetuning writes 90 MB a round."""
    rounds = sorted(folder.glob("round-*.safetensors"))
    for path in rounds[:-1]:
        path.unlink()


# ---- the sweep ----------------------------------------------------------------------------

def sweep(todo: list[dict], cache: Path, runner: Callable[[dict], dict], retry_failed: bool = False,
          record: dict | None = None) -> list[dict]:
    """Run every cell the cache lacks, appending each outcome at once; failed cells stay failed unless retried."""
    done = CellCache(cache)
    rows = []
    for cell in todo:
        key = cell_key(cell)
        row = done.get(key)
        if row is None or (retry_failed and row.get("status") == "failed"):
            row = {**cell, **attempt(cell, runner), **(record or {})}
            done.put(key, row)
        rows.append(row)
    return rows


def attempt(cell: dict, runner: Callable[[dict], dict]) -> dict:
    """The runner's result, or a failure with the error's last line; Ctrl-C still stops the sweep."""
    start = time.perf_counter()
    try:
        result = runner(cell)
    except Exception as err:  # noqa: BLE001 - any failure is recorded, the sweep goes on
        lines = str(err).strip().splitlines()
        result = {"status": "failed", "error": lines[-1] if lines else type(err).__name__}
        print(f"cell {describe(cell)} failed: {result['error']}", file=sys.stderr, flush=True)
    return {**result, "seconds": round(time.perf_counter() - start, 1)}


def cache_state(cell: dict, done: CellCache, commit: str | None = None) -> str:
    """'cached', 'failed: <line>' or 'to run'."""
    row = done.get(cell_key(cell, commit))
    if row is None:
        return "to run"
    return f"failed: {row.get('error', '')}" if row.get("status") == "failed" else "cached"


def headline(task: str, row: dict) -> str:
    """The official metrics of a finished cell, one line."""
    if row.get("status") == "failed":
        return f"failed: {row.get('error', '')}"
    metrics = row.get("final_metrics", {})
    return ", ".join(f"{m} {metrics[m]:.4f}" for m in glue.get_task(task).metrics if m in metrics)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cache", type=Path, default=None, help="default: the config's [grid] cache")
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: $FEDRP_GLUE_DIR, else the config's)")
    parser.add_argument("--only", action="append", default=[],
                        help="e.g. task=rte,method=slash,alpha=1.0,seed=1; kind=federated|reference; a repeated field: any "
                             "value; method and alpha pick federated cells, a selected task keeps its reference")
    parser.add_argument("--dry-run", action="store_true", help="list the selected cells and which are cached")
    parser.add_argument("--retry-failed", action="store_true", help="run again the cells cached as failed")
    args = parser.parse_args(argv)
    try:
        grid = load_config(args.config, args.data_dir)
        todo = select(cells(grid), parse_only(args.only, grid))
        versions(grid)  # a pinned commit that git lacks: one line now, not a traceback mid-listing
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    cache = args.cache or grid.cache
    if args.dry_run:
        done = CellCache(cache)
        for cell in todo:
            print(f"{cache_state(cell, done, grid.commit):10.60} {describe(cell)}")
        if any(c["task"] == "qnli" for c in todo):
            print(f"qnli is {task_label(grid, 'qnli')}, data {grid.qnli.dir}")
        states = Counter(cache_state(c, done, grid.commit).split(":")[0] for c in todo)
        pinned = f"; code of commit {grid.commit}" if grid.commit else ""
        print(f"{len(todo)} cells ({dict(states)}); cache {cache}{pinned}")
        return
    if reason := unpinned_code(grid):
        parser.error(reason)
    if any(c["task"] == "qnli" for c in todo):
        n_train, n_held = write_qnli_split(grid)
        print(f"QNLI (dev split: {n_train} train / {n_held} held out) in {grid.qnli.dir}", file=sys.stderr)
    record = {"command": shlex.join(["python", "-m", "simulations.harness.grid", *argv]),
              "config_sha256": hashlib.sha256(args.config.read_bytes()).hexdigest()}
    rows = sweep(todo, cache, lambda cell: run_one(cell, grid, Paths(grid.scratch)), args.retry_failed, record)
    for row in rows:
        print(f"{task_label(grid, row['task'])} | {describe(row)}: {headline(row['task'], row)}")


if __name__ == "__main__":
    main()
