"""The GLUE grid: task x Dirichlet alpha x method through the federation, plus a centralized reference per task.

    python -m simulations.grid --config simulations/grid.toml                 # every cell not yet cached
    python -m simulations.grid --only task=rte,method=slash,alpha=1.0         # one cell and RTE's reference
    python -m simulations.grid --dry-run                                      # the cells, and which are cached
    python -m simulations.results_page --config simulations/grid.toml         # docs/RESULTS.md from the cache

One TOML file fixes the grid (simulations/grid.toml). Every cell is one process: `python -m
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
import csv
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from fedrp import glue
from fedrp.centralized import RunConfig
from fedrp.federation import FedConfig
from fedrp.files import write_text
from fedrp.methods import METHODS
from fedrp.payload import error_line
from simulations.cells import CellCache, condense, run_federation
from simulations.cells import cell_key as settings_key  # grid.cell_key names the grid's own
from simulations.code_version import changed_modules, code_version

DEFAULT_CONFIG = Path("simulations/grid.toml")
SECTIONS = {"grid", "federated", "federated-override", "reference", "qnli"}
GRID_KEYS = {"tasks", "alphas", "methods", "reference", "data-dir", "cache", "scratch", "estimate", "commit"}
PER_CELL_KEYS = {"task", "method", "alpha", "data-dir", "store", "checkpoint-dir", "resume-from"}  # the grid sets these
RUNNER_KEYS = {"num-supernodes", "cpus-per-client", "engine"}  # simulations.run options that are not run-config keys
ENGINES = ("flower", "inprocess")  # simulations.run --engine
REFERENCE_SHARED = ("max-train-samples", "max-eval-samples")  # the reference takes these from [federated]
REFERENCE_FIXED = {"task", "data-dir", "max-train-samples", "max-eval-samples", "out", "privacy", "progress",
                   "method"}
FILTER_FIELDS = ("kind", "task", "method", "alpha")
KINDS = ("federated", "reference")
@dataclasses.dataclass(frozen=True)
class QnliSplit:
    """How QNLI's dev set is cut into a federated training part and a held-out evaluation part."""

    held_out: int = 1000
    seed: int = 0
    dir: Path = Path("runs/grid/glue-derived")

    @property
    def data_id(self) -> str:
        return f"qnli-dev-split:held-out={self.held_out},seed={self.seed}"


@dataclasses.dataclass(frozen=True)
class Override:
    """Run-config keys that replace [federated]'s in the cells of some methods, alphas and tasks."""

    methods: tuple[str, ...]
    alphas: tuple[float, ...] | None  # None: every alpha
    options: dict
    tasks: tuple[str, ...] | None = None  # None: every task

    def applies(self, method: str, alpha: float, task: str) -> bool:
        return method in self.methods and (self.alphas is None or alpha in self.alphas) \
            and (self.tasks is None or task in self.tasks)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The parsed config file: which cells exist and the options every cell of a kind shares."""

    tasks: tuple[str, ...]
    alphas: tuple[float, ...]
    methods: tuple[str, ...]
    reference: bool
    data_dir: Path
    cache: Path
    scratch: Path
    estimate: str
    federated: dict
    overrides: tuple[Override, ...]  # [[federated-override]] in file order: later ones win
    reference_options: dict
    qnli: QnliSplit
    config: Path
    commit: str | None = None  # the commit whose result code the page reports; None: the working tree's


# ---- the config file ----------------------------------------------------------------------

def load_config(path: Path | str, data_dir: str | None = None) -> Grid:
    """Read and check the grid's TOML file; anything unknown is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no grid config at {path}: expected a TOML file like simulations/grid.toml")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    _known(raw, SECTIONS, f"{path}: section")
    section = raw.get("grid", {})
    _known(section, GRID_KEYS, f"{path} [grid]: key")
    methods = _parse_methods(section.get("methods", list(METHODS)), path)
    tasks = _parse_tasks(section.get("tasks", []), path)
    folder = data_dir or os.environ.get(glue.GLUE_DIR_ENV) or section.get("data-dir", "../shared/glue")
    return Grid(
        tasks=tasks, alphas=_parse_alphas(section.get("alphas", []), path),
        methods=methods, reference=bool(section.get("reference", True)), data_dir=Path(folder).resolve(),
        cache=Path(section.get("cache", "runs/grid/cells.jsonl")), scratch=Path(section.get("scratch", "runs/grid")),
        estimate=str(section.get("estimate", "")),
        federated=_parse_federated(raw.get("federated", {}), path),
        overrides=_parse_overrides(raw.get("federated-override", []), methods, tasks, path),
        reference_options=_parse_reference(raw.get("reference", {}), path),
        qnli=_parse_qnli(raw.get("qnli", {}), path), config=path, commit=_parse_commit(section.get("commit"), path),
    )


def _parse_commit(value, path: Path) -> str | None:
    """The pinned commit (git is asked for it only when its code versions are needed: `versions`)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path} [grid] commit: expected a commit hash as a string, got {value!r}")
    return value


def _known(table: dict, allowed: set[str], what: str) -> None:
    """Refuse a misspelt key instead of silently ignoring it."""
    for key in table:
        if key not in allowed:
            raise ValueError(f"{what} {key!r} is unknown; expected one of {sorted(allowed)}")


def _parse_tasks(values: list, path: Path) -> tuple[str, ...]:
    """GLUE task names (any spelling fedrp.glue accepts), normalised."""
    if not values:
        raise ValueError(f"{path} [grid]: tasks is empty; expected GLUE tasks, e.g. [\"sst2\", \"rte\"]")
    try:
        return tuple(dict.fromkeys(glue.get_task(str(v)).name for v in values))
    except ValueError as err:
        raise ValueError(f"{path} [grid] tasks: {err}") from None


def _parse_alphas(values: list, path: Path) -> tuple[float, ...]:
    """Dirichlet concentrations: positive numbers."""
    if not values:
        raise ValueError(f"{path} [grid]: alphas is empty; expected positive Dirichlet alphas, e.g. [0.1, 1.0]")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{path} [grid] alphas: {v!r} is not a positive number (a Dirichlet alpha)")
        out.append(float(v))
    return tuple(dict.fromkeys(out))


def _parse_methods(values: list, path: Path) -> tuple[str, ...]:
    """Method names of fedrp.methods."""
    for m in values:
        if m not in METHODS:
            raise ValueError(f"{path} [grid] methods: unknown method {m!r}; expected some of {list(METHODS)}")
    if not values:
        raise ValueError(f"{path} [grid]: methods is empty; expected some of {list(METHODS)}")
    return tuple(dict.fromkeys(values))


def _parse_federated(table: dict, path: Path) -> dict:
    """Run-config keys every federated cell shares, typed as FedConfig types them."""
    for key in table:
        if key in PER_CELL_KEYS:
            raise ValueError(f"{path} [federated]: {key!r} is set per cell by the grid; remove it")
    runner = {k: table[k] for k in table if k in RUNNER_KEYS and k != "engine"}
    for key, value in runner.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{path} [federated] {key}: expected a positive number, got {value!r}")
    if table.get("engine", "flower") not in ENGINES:
        raise ValueError(f"{path} [federated] engine: expected one of {list(ENGINES)}, got {table['engine']!r}")
    rest = {k: v for k, v in table.items() if k not in RUNNER_KEYS}
    engine = {"engine": table["engine"]} if "engine" in table else {}
    try:
        typed = FedConfig.from_run_config({}, rest).to_run_config()
    except ValueError as err:
        raise ValueError(f"{path} [federated]: {err}") from None
    runner = {k: int(v) if k == "num-supernodes" else float(v) for k, v in runner.items()}
    return {**{k: typed[k] for k in rest}, **runner, **engine}


def _parse_overrides(tables: list, methods: tuple[str, ...], tasks: tuple[str, ...], path: Path) -> tuple[Override, ...]:
    """[[federated-override]] tables: run-config keys for some methods, alphas and tasks, checked for each method."""
    out = []
    what = f"{path} [[federated-override]]"
    for table in tables:
        if not isinstance(table, dict):
            raise ValueError(  # noqa: TRY004 - a config error: one line and exit 2, as every other
                f"{what}: expected tables of run-config keys with optional methods, alphas and tasks lists")
        chosen = tuple(table.get("methods", methods))
        if not chosen or any(m not in methods for m in chosen):
            raise ValueError(f"{what} methods: expected some of the grid's methods {list(methods)}, got {list(chosen)}")
        alphas = tuple(_parse_alphas(table["alphas"], path)) if "alphas" in table else None
        named = tuple(table["tasks"]) if "tasks" in table else None
        if named is not None and (not named or any(t not in tasks for t in named)):
            raise ValueError(f"{what} tasks: expected some of the grid's tasks {list(tasks)}, got {list(named)}")
        keys = {k: v for k, v in table.items() if k not in ("methods", "alphas", "tasks")}
        for key in keys:
            if key in PER_CELL_KEYS or key in RUNNER_KEYS:
                raise ValueError(f"{what}: {key!r} cannot differ between cells; remove it")
        typed = {}
        for method in chosen:
            try:
                typed = FedConfig.from_run_config({}, {"method": method, **keys}).to_run_config()
            except ValueError as err:
                raise ValueError(f"{what} ({method}): {err}") from None
        out.append(Override(methods=chosen, alphas=alphas, options={k: typed[k] for k in keys}, tasks=named))
    return tuple(out)


def _parse_reference(table: dict, path: Path) -> dict:
    """`fedrp train` options of the centralized reference (RunConfig fields the grid does not fix)."""
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(RunConfig)}
    for key in table:
        if key == "methods":
            continue
        if key in REFERENCE_FIXED:
            raise ValueError(f"{path} [reference]: {key!r} is set by the grid (the federated cells' data); remove it")
        if key not in fields:
            raise ValueError(f"{path} [reference]: unknown key {key!r}; expected some of "
                             f"{sorted(set(fields) - REFERENCE_FIXED)}")
    methods = table.get("methods", ["full"])
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"{path} [reference] methods: expected some of {list(METHODS)}, got {methods!r}")
    typed = {k: _typed(fields[k].type, v, f"{path} [reference] {k}") for k, v in table.items() if k != "methods"}
    return {"methods": list(dict.fromkeys(methods)), **typed}


def _typed(annotation: str, value, what: str):
    """A TOML value as the RunConfig field's type (3 and 3.0 epochs are the same cell)."""
    kind = annotation.split("|")[0].strip()
    try:
        return {"int": int, "float": float, "str": str, "bool": bool}.get(kind, lambda v: v)(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected {kind}, got {value!r}") from None


def _parse_qnli(table: dict, path: Path) -> QnliSplit:
    """The seeded split of QNLI's dev set."""
    _known(table, {"held-out", "seed", "dir"}, f"{path} [qnli]: key")
    split = QnliSplit(held_out=table.get("held-out", 1000), seed=table.get("seed", 0),
                      dir=Path(table.get("dir", "runs/grid/glue-derived")))
    if not isinstance(split.held_out, int) or split.held_out < 1 or not isinstance(split.seed, int):
        raise ValueError(f"{path} [qnli]: held-out must be a positive integer and seed an integer, got "
                         f"{split.held_out!r} and {split.seed!r}")
    return split


# ---- cells --------------------------------------------------------------------------------

def cells(grid: Grid) -> list[dict]:
    """Every cell's settings: the references first (each reference method per task), then alpha by task by method."""
    out = [reference_cell(grid, task, method) for task in grid.tasks
           for method in grid.reference_options["methods"]] if grid.reference else []
    for alpha in grid.alphas:
        for task in grid.tasks:
            for method in grid.methods:
                options = federated_options(grid, method, alpha, task)
                out.append({"kind": "federated", "task": task, "method": method, "alpha": alpha,
                            "data": data_id(grid, task), "options": options})
    return out


def federated_options(grid: Grid, method: str, alpha: float, task: str) -> dict:
    """[federated], then every override that names this method, alpha and task (or names none), in file order."""
    options = dict(grid.federated)
    for o in grid.overrides:
        if o.applies(method, alpha, task):
            options.update(o.options)
    return options


def reference_cell(grid: Grid, task: str, method: str) -> dict:
    """Centralized finetuning on the federated cells' training subset, evaluated on the same dev examples."""
    shared = {k: grid.federated[k] for k in REFERENCE_SHARED if grid.federated.get(k)}
    options = {k: v for k, v in grid.reference_options.items() if k != "methods"}
    return {"kind": "reference", "task": task, "method": method, "alpha": None,
            "data": data_id(grid, task), "options": {**options, **shared}}


def data_id(grid: Grid, task: str) -> str:
    """Which data a cell reads: the official GLUE files, or QNLI's derived split."""
    return grid.qnli.data_id if task == "qnli" else "glue"


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
    """One line naming a cell."""
    if cell["kind"] == "reference":
        return f"{cell['task']:5} {cell['method']:7} centralized reference"
    return f"{cell['task']:5} {cell['method']:7} alpha={cell['alpha']:g}"


def parse_only(specs: list[str], grid: Grid) -> dict[str, set]:
    """`task=rte,method=slash,alpha=1.0` (a field repeated: any of its values) -> allowed values per field."""
    allowed = {"kind": set(KINDS), "task": set(grid.tasks), "method": set(grid.methods), "alpha": set(grid.alphas)}
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
    if field == "alpha":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"--only alpha={value!r}: expected a number") from None
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


# ---- QNLI's dev split ---------------------------------------------------------------------

def qnli_source(grid: Grid) -> Path:
    return grid.data_dir / "QNLI" / "dev.tsv"


def read_rows(path: Path) -> list[list[str]]:
    """TSV rows exactly as fedrp.glue reads them (quoting off)."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        return [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]


def held_out_indices(labels: list[str], n: int, seed: int) -> set[int]:
    """n row indices keeping each label's share (largest remainder), picked in a seeded sha256 order."""
    if not 0 < n < len(labels):
        raise ValueError(f"cannot hold out {n} of {len(labels)} rows: expected 0 < held-out < {len(labels)}")
    counts = Counter(labels)
    exact = {lab: n * c / len(labels) for lab, c in counts.items()}
    quota = {lab: int(v) for lab, v in exact.items()}
    for lab in sorted(exact, key=lambda x: (quota[x] - exact[x], x))[: n - sum(quota.values())]:
        quota[lab] += 1
    order = sorted(range(len(labels)), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    held = set()
    for i in order:
        if quota[labels[i]] > 0:
            held.add(i)
            quota[labels[i]] -= 1
    return held


def split_qnli(source: Path, out: Path, held_out: int, seed: int) -> tuple[int, int]:
    """Write out/QNLI/{train,dev}.tsv from QNLI's dev set (rows in file order); (train rows, held-out rows)."""
    if not source.is_file():
        raise FileNotFoundError(f"no QNLI dev set at {source}: expected the official GLUE layout <dir>/QNLI/dev.tsv")
    header, *rows = read_rows(source)
    if "label" not in header:
        raise ValueError(f"{source} has no 'label' column in its header {header}: expected the official QNLI TSV")
    labels = [r[header.index("label")] for r in rows]
    held = held_out_indices(labels, held_out, seed)
    parts = {"train": [r for i, r in enumerate(rows) if i not in held],
             "dev": [r for i, r in enumerate(rows) if i in held]}
    for split, part in parts.items():
        _write_if_changed(out / "QNLI" / f"{split}.tsv", "".join("\t".join(r) + "\n" for r in [header, *part]))
    note = {"source": str(source), "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "seed": seed, "held_out": len(parts["dev"]), "train": len(parts["train"]),
            "how": "simulations.grid.split_qnli: per label, the rows first in sha256('{seed}:{row}') order"}
    _write_if_changed(out / "QNLI" / "split.json", json.dumps(note, indent=1) + "\n")
    return len(parts["train"]), len(parts["dev"])


def _write_if_changed(path: Path, text: str) -> None:
    """Leave an identical file alone: its mtime keys fedrp's tokenization cache."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)


def task_label(grid: Grid, task: str) -> str:
    """The name a task goes by in tables and plots; QNLI says how its dev set was split."""
    if task != "qnli":
        return glue.get_task(task).folder
    source = qnli_source(grid)
    train = len(read_rows(source)) - 1 - grid.qnli.held_out if source.is_file() else "?"
    return f"QNLI (dev split: {train} train / {grid.qnli.held_out} held out)"


def data_dir_for(grid: Grid, task: str) -> Path:
    """The GLUE folder a task's cells read."""
    return grid.qnli.dir.resolve() if task == "qnli" else grid.data_dir


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
    cmd = [sys.executable, "-m", "fedrp", "train", "--json", *(f"--{k}={v}" for k, v in options.items())]
    print("running", shlex.join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=log, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
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
                        help="e.g. task=rte,method=slash,alpha=1.0; kind=federated|reference; a repeated field: any "
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
        n_train, n_held = split_qnli(qnli_source(grid), grid.qnli.dir, grid.qnli.held_out, grid.qnli.seed)
        print(f"QNLI (dev split: {n_train} train / {n_held} held out) in {grid.qnli.dir}", file=sys.stderr)
    record = {"command": shlex.join(["python", "-m", "simulations.grid", *argv]),
              "config_sha256": hashlib.sha256(args.config.read_bytes()).hexdigest()}
    rows = sweep(todo, cache, lambda cell: run_one(cell, grid, Paths(grid.scratch)), args.retry_failed, record)
    for row in rows:
        print(f"{task_label(grid, row['task'])} | {describe(row)}: {headline(row['task'], row)}")


if __name__ == "__main__":
    main()
