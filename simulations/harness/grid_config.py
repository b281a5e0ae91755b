"""The grid's TOML file (simulations/harness/grid.toml) read and checked, and the cells it defines: each
federated cell's options ([federated], then the overrides that name it) and each task's centralized
references, with the data a task's cells read (QNLI: the derived dev split, simulations.harness.qnli_split)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from fedrp import glue
from fedrp.centralized import RunConfig
from fedrp.federation import FedConfig
from fedrp.methods import METHODS
from simulations.bench_options import SHARED_GLUE
from simulations.harness.qnli_split import read_rows, split_qnli

DEFAULT_CONFIG = Path("simulations/harness/grid.toml")
SECTIONS = {"grid", "federated", "federated-override", "reference", "qnli", "seeds"}
GRID_KEYS = {"tasks", "alphas", "methods", "reference", "data-dir", "cache", "scratch", "estimate", "commit"}
PER_CELL_KEYS = {"task", "method", "alpha", "data-dir", "store", "checkpoint-dir", "resume-from"}  # the grid sets these
RUNNER_KEYS = {"num-supernodes", "cpus-per-client", "engine"}  # simulations.run options that are not run-config keys
ENGINES = ("flower", "inprocess")  # simulations.run --engine
REFERENCE_SHARED = ("max-train-samples", "max-eval-samples")  # the reference takes these from [federated]
REFERENCE_FIXED = {"task", "data-dir", "max-train-samples", "max-eval-samples", "out", "privacy", "progress",
                   "method"}
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
class Seeds:
    """Replicates where a verdict rests: these cells again at each extra data seed (the grid's own cells are
    seed 0). A seed is the run's `data-seed` (what it draws: fedrp.federation.FedConfig.data_seed)."""

    seeds: tuple[int, ...] = ()
    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()  # federated, at every alpha
    reference_methods: tuple[str, ...] = ()

    def covers(self, task: str, method: str, alpha: float | None) -> bool:
        """Whether the cell (alpha None: a reference) is replicated at the extra seeds."""
        return task in self.tasks and method in (self.reference_methods if alpha is None else self.methods)


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
    seeds: Seeds = Seeds()


# ---- the config file ----------------------------------------------------------------------

def load_config(path: Path | str, data_dir: str | None = None) -> Grid:
    """Read and check the grid's TOML file; anything unknown is refused by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no grid config at {path}: expected a TOML file like simulations/harness/grid.toml")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    _known(raw, SECTIONS, f"{path}: section")
    section = raw.get("grid", {})
    _known(section, GRID_KEYS, f"{path} [grid]: key")
    methods = _parse_methods(section.get("methods", list(METHODS)), path)
    tasks = _parse_tasks(section.get("tasks", []), path)
    folder = data_dir or os.environ.get(glue.GLUE_DIR_ENV) or section.get("data-dir", SHARED_GLUE)
    return Grid(
        tasks=tasks, alphas=_parse_alphas(section.get("alphas", []), path),
        methods=methods, reference=bool(section.get("reference", True)), data_dir=Path(folder).resolve(),
        cache=Path(section.get("cache", "runs/grid/cells.jsonl")), scratch=Path(section.get("scratch", "runs/grid")),
        estimate=str(section.get("estimate", "")),
        federated=_parse_federated(raw.get("federated", {}), path),
        overrides=_parse_overrides(raw.get("federated-override", []), methods, tasks, path),
        reference_options=_parse_reference(raw.get("reference", {}), path),
        qnli=_parse_qnli(raw.get("qnli", {}), path), config=path, commit=_parse_commit(section.get("commit"), path),
        seeds=_parse_seeds(raw.get("seeds", {}), tasks, methods, raw.get("reference", {}).get("methods", ["full"]),
                           path),
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


def _parse_seeds(table: dict, tasks: tuple[str, ...], methods: tuple[str, ...], references: list,
                 path: Path) -> Seeds:
    """[seeds]: extra data seeds (positive, distinct) and the grid's tasks, methods and references they cover."""
    what = f"{path} [seeds]"
    _known(table, {"seeds", "tasks", "methods", "reference-methods"}, f"{what}: key")
    seeds = table.get("seeds", [])
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{what} seeds: expected distinct positive integers (seed 0 is the grid's own), got {seeds!r}")
    try:
        named = tuple(glue.get_task(str(v)).name for v in table.get("tasks", []))
    except ValueError as err:
        raise ValueError(f"{what} tasks: {err}") from None
    chosen = {"tasks": named, "methods": tuple(table.get("methods", [])),
              "reference-methods": tuple(table.get("reference-methods", []))}
    for key, allowed in (("tasks", tasks), ("methods", methods), ("reference-methods", tuple(references))):
        if any(v not in allowed for v in chosen[key]):
            raise ValueError(f"{what} {key}: expected some of the grid's {list(allowed)}, got {list(chosen[key])}")
    return Seeds(seeds=tuple(seeds), tasks=chosen["tasks"], methods=chosen["methods"],
                 reference_methods=chosen["reference-methods"])


# ---- cells --------------------------------------------------------------------------------

def cells(grid: Grid) -> list[dict]:
    """Every cell's settings: the references first (each reference method per task), then alpha by task by method;
    then the same order again at each extra seed, for the cells [seeds] names."""
    base = [reference_cell(grid, task, method) for task in grid.tasks
            for method in grid.reference_options["methods"]] if grid.reference else []
    for alpha in grid.alphas:
        for task in grid.tasks:
            for method in grid.methods:
                options = federated_options(grid, method, alpha, task)
                base.append({"kind": "federated", "task": task, "method": method, "alpha": alpha,
                             "data": data_id(grid, task), "options": options, "seed": 0})
    extra = [at_seed(cell, seed) for seed in grid.seeds.seeds for cell in base
             if grid.seeds.covers(cell["task"], cell["method"], cell["alpha"])]
    return base + extra


def at_seed(cell: dict, seed: int) -> dict:
    """The cell at another data seed: its options name the seed, so its key differs from seed 0's."""
    return {**cell, "options": {**cell["options"], "data-seed": seed}, "seed": seed}


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
            "data": data_id(grid, task), "options": {**options, **shared}, "seed": 0}


def data_id(grid: Grid, task: str) -> str:
    """Which data a cell reads: the official GLUE files, or QNLI's derived split."""
    return grid.qnli.data_id if task == "qnli" else "glue"


def qnli_source(grid: Grid) -> Path:
    return grid.data_dir / "QNLI" / "dev.tsv"


def task_label(grid: Grid, task: str) -> str:
    """The name a task goes by in tables and plots; QNLI says how its dev set was split."""
    if task != "qnli":
        return glue.get_task(task).folder
    source = qnli_source(grid)
    train = len(read_rows(source)) - 1 - grid.qnli.held_out if source.is_file() else "?"
    return f"QNLI (dev split: {train} train / {grid.qnli.held_out} held out)"


def write_qnli_split(grid: Grid) -> tuple[int, int]:
    """The config's QNLI split, written to its (gitignored) folder: (train rows, held-out rows)."""
    return split_qnli(qnli_source(grid), grid.qnli.dir, grid.qnli.held_out, grid.qnli.seed)


def data_dir_for(grid: Grid, task: str) -> Path:
    """The GLUE folder a task's cells read."""
    return grid.qnli.dir.resolve() if task == "qnli" else grid.data_dir
