"""A task: data, columns, labels or regression, metrics. The GLUE tasks are built-in definitions
(fedrp.glue); a user's own is a small TOML file read here, its data through `datasets`.

    name = "intents"
    train = "train.csv"            # CSV, TSV, JSON Lines or Parquet, one file or a list
    validation = "dev.csv"         # optional: else 10% of train, held out by a fixed seed
    text = "utterance"             # pair = "..." for a pair task
    label = "intent"
    labels = ["greet", "bye"]      # or: kind = "regression"
    metrics = ["accuracy", "macro_f1"]   # optional: the kind's defaults

Instead of files, `dataset = "folder"` (written by datasets' save_to_disk) or `hub = "owner/name"`
(online) names the data. Relative paths are read from the TOML file's folder. The same keys may be
given inline instead of a file: `train=train.csv text=utterance label=intent labels=greet,bye`.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import json
import math
import shlex
import sys
from functools import lru_cache
from pathlib import Path

import datasets
import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fedrp.metrics import METRICS

FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
REGRESSION_METRICS = ("pearson", "spearmanr")
HELD_OUT_SHARE, HELD_OUT_SEED = 0.1, 20261207  # a task without validation files: its dev examples
KEYS = {"name", "train", "validation", "test", "dataset", "hub", "text", "pair", "label", "labels", "kind", "metrics"}


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: its columns, its labels (none: regression), its metrics; GLUE's also its official files."""

    name: str
    folder: str
    text: str | int
    pair: str | int | None
    label: str | int
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    hub_text: str
    hub_pair: str | None
    header: bool = True
    dev_splits: tuple[str, ...] = ("dev",)
    data: TaskData | None = None  # a user's task: where its splits are; None for GLUE's official layout
    score_binning: str = "fixed"  # how a regression task's scores are binned for label skew (fedrp.partition)

    @property
    def is_regression(self) -> bool:
        return self.label_names == ()

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Where a user's task keeps its examples: files per split, a save_to_disk folder, or a Hub dataset."""

    definition: str  # the TOML file's path, or the keys given inline, for messages
    content: str = ""  # the definition's text: part of the tokenized cache's key
    splits: dict[str, tuple[Path, ...]] = dataclasses.field(default_factory=dict)
    dataset: Path | None = None
    hub: str | None = None

    def __hash__(self) -> int:  # frozen with a dict field: hashed by what defines it
        return hash((self.definition, tuple(sorted(self.splits.items())), self.dataset, self.hub))


LIST_KEYS = ("train", "validation", "test", "labels", "metrics")  # comma-separated when given inline


def is_task_file(name: str) -> bool:
    """A TOML definition's path, or the same keys given inline (`train=x.csv text=review ...`)."""
    return name.endswith(".toml") or "=" in name


def load_task(spec: str | Path) -> Task:
    """A user's task from its TOML file or its keys given inline, checked key by key; one line naming the key
    on a mistake."""
    if "=" in str(spec):
        return _load_inline(canonical_inline(str(spec)))
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"no task file at {path}: expected a TOML task definition (docs/guide/your-task.md)")
    return _load_task(str(path.resolve()), path.read_bytes())


def _inline_keys(spec: str) -> dict:
    """`key=value` pairs, shell-quoted where a value has spaces; the list keys split at commas."""
    raw = {}
    for item in shlex.split(spec):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--task {spec!r}: {item!r} is not KEY=VALUE; expected keys of {sorted(KEYS)}")
        raw[key] = [v for v in value.split(",") if v] if key in LIST_KEYS else value
        if key in LIST_KEYS and any("=" in v for v in raw[key]):  # `train=a.csv,text=t`: a comma, not a space
            raise ValueError(f"--task {spec!r}: separate KEY=VALUE pairs with spaces; commas only separate a "
                             f"list's items ({key}={value!r})")
    return raw


def canonical_inline(spec: str) -> str:
    """An inline definition with its data paths made absolute (another process may run elsewhere) and its keys
    sorted: one text per task, for caches and messages."""
    raw = _inline_keys(spec)
    for key in ("train", "validation", "test"):
        if key in raw:
            raw[key] = [str(Path(f).resolve()) for f in raw[key]]
    for key in ("dataset",):
        if key in raw:
            raw[key] = str(Path(raw[key]).resolve())
    return shlex.join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in sorted(raw.items()))


@lru_cache(maxsize=32)
def _load_inline(spec: str) -> Task:
    raw = _inline_keys(spec)
    raw.setdefault("name", Path(raw["train"][0]).stem if raw.get("train") else "task")
    return _definition(raw, Path.cwd() / "inline", f"--task {spec!r}", spec)


@lru_cache(maxsize=32)
def _load_task(path: str, content: bytes) -> Task:
    """Parsed once per content (a definition is a few hundred bytes, read again on every call)."""
    p = Path(path)
    try:
        raw = tomllib.loads(content.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"task file {p} is not valid TOML ({err})") from None
    return _definition(raw, p, f"task file {p}", content.decode("utf-8"))


def _definition(raw: dict, base: Path, where: str, content: str) -> Task:
    """A task from its keys, whichever way they came; data paths are read from `base`'s folder."""
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(KEYS)}")
    for key in ("name", "text", "label"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ValueError(f"{where}: {key!r} must be a non-empty string")
    if raw.get("pair") is not None and not isinstance(raw["pair"], str):
        raise ValueError(f"{where}: 'pair' must be a column name")
    label_names = _label_names(raw, where)
    metrics = tuple(raw.get("metrics") or (REGRESSION_METRICS if not label_names else CLASSIFICATION_METRICS))
    unknown_metrics = sorted(set(metrics) - set(METRICS))
    if unknown_metrics:
        raise ValueError(f"{where}: unknown metrics {unknown_metrics}; expected some of {sorted(METRICS)}")
    data = _task_data(raw, base, where, content)
    return Task(raw["name"], raw["name"], raw["text"], raw.get("pair"), raw["label"], label_names, metrics,
                raw["text"], raw.get("pair"), dev_splits=("validation",), data=data, score_binning="quantile")


def _label_names(raw: dict, where: str) -> tuple[str, ...]:
    kind = raw.get("kind", "classification")
    if kind not in ("classification", "regression"):
        raise ValueError(f"{where}: kind must be 'classification' or 'regression', got {kind!r}")
    if kind == "regression":
        if raw.get("labels"):
            raise ValueError(f"{where}: a regression task has no labels; remove 'labels' or set kind = "
                             f"'classification'")
        return ()
    names = raw.get("labels")
    if not isinstance(names, list) or len(names) < 2:
        raise ValueError(f"{where}: 'labels' must list the label names (at least 2), or set kind = 'regression'")
    names = tuple(str(n) for n in names)  # integer labels are named by their digits
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{where}: label {name!r} is listed twice in 'labels'; expected each label once")
        seen.add(name)
    return names


def _task_data(raw: dict, base: Path, where: str, content: str) -> TaskData:
    sources = [k for k in ("train", "dataset", "hub") if raw.get(k)]
    if len(sources) != 1:
        raise ValueError(f"{where}: expected exactly one of 'train' (files), 'dataset' (a save_to_disk folder) or "
                         f"'hub' (a Hub dataset name); got {sources or 'none'}")
    if raw.get("hub"):
        return TaskData(where, content, hub=str(raw["hub"]))
    if raw.get("dataset"):
        folder = base.parent / raw["dataset"]
        if not folder.is_dir():
            raise ValueError(f"{where}: dataset {folder} is not a folder: expected one written by save_to_disk")
        return TaskData(where, content, dataset=folder)
    splits = {}
    for split in ("train", "validation", "test"):
        files = raw.get(split) or []
        files = [files] if isinstance(files, str) else files
        paths = tuple(base.parent / f for f in files)
        for f in paths:
            if not f.is_file():
                raise ValueError(f"{where}: {split} file {f} does not exist")
            if f.suffix.lower() not in FORMATS:
                raise ValueError(f"{where}: {split} file {f} must end in one of {sorted(FORMATS)}")
        if paths:
            splits[split] = paths
    return TaskData(where, content, splits=splits)


# ---- reading ----------------------------------------------------------------------------------

def read_split(task: Task, split: str) -> datasets.Dataset:
    """Columns text, optional pair, label (class id, or float score): every row checked, with one line naming
    the file, the row and the problem."""
    data = task.data
    if data.hub is not None:
        return check_rows(task, _from_hub(data.hub, split), f"Hub dataset {data.hub} ({split})")
    if data.dataset is not None:
        return check_rows(task, _from_disk(data.dataset, split), f"{data.dataset} ({split})")
    if split == "validation" and "validation" not in data.splits:
        return _held_out(task, keep=True)
    if split == "train" and "validation" not in data.splits:
        return _held_out(task, keep=False)
    if split not in data.splits:
        raise ValueError(f"task {task.name} has no {split} files ({data.definition})")
    return _read_files(task, data.splits[split])


def _read_files(task: Task, paths: tuple[Path, ...]) -> datasets.Dataset:
    parts = [read_file(task, path) for path in paths]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def read_file(task: Task, path: Path) -> datasets.Dataset:
    """One file in the task's columns, checked row by row (a deployed node's own data, too)."""
    return check_rows(task, read_data_file(path), str(path))


def _held_out(task: Task, keep: bool) -> datasets.Dataset:
    """No validation files: a fixed tenth of the training files is the dev split, the rest is trained on."""
    full = _read_files(task, task.data.splits["train"])
    n = len(full)
    held = np.sort(np.random.default_rng(HELD_OUT_SEED).permutation(n)[:max(1, int(n * HELD_OUT_SHARE))])
    if keep:
        return full.select(held)
    return full.select(np.setdiff1d(np.arange(n), held))


def read_data_file(path: Path, literal_quotes: bool = False, header: bool = True) -> datasets.Dataset:
    """One data file through datasets (Arrow, memory-mapped from its cache): the reader's errors become one
    line naming the file. literal_quotes: a quote is text, not quoting (GLUE's TSVs); header=False: the
    columns are named by position, "0", "1", ... (CoLA)."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: expected a header line and one example per line")
    kind = FORMATS[path.suffix.lower()]
    options = {}
    if kind == "csv":
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        # Every column read as text, as written: pandas would guess numbers, and read "NA", "null" or "nan"
        # sentences as missing. datasets takes no dtype for CSV, so the header is read here to type each column.
        first, second = _first_rows(path, sep, literal_quotes)
        if second is not None and len(second) != len(first):  # pandas would take an extra field in the first
            raise ValueError(  # example for an index column and shift the others; later rows it refuses itself
                f"{path} line 2: {len(second)} fields, expected {len(first)} like the {'header' if header else 'first line'}"
                " (a stray tab or comma?)")
        names = first if header else [str(i) for i in range(len(first))]
        options = {"sep": sep, "keep_default_na": False, "encoding": "utf-8-sig",
                   "features": datasets.Features({name: datasets.Value("string") for name in names}),
                   **({"quoting": csv.QUOTE_NONE} if literal_quotes else {}),
                   **({} if header else {"header": None, "column_names": names})}
    try:
        # Named by the file's bytes: datasets keys its cache of a local file by path and mtime alone, and would
        # give an edit that kept both (a copy that keeps timestamps) the rows it read before.
        return datasets.load_dataset(kind, name=f"sha256-{file_digest(path)[:24]}", data_files=str(path),
                                     split="train", **options)
    except Exception as err:  # noqa: BLE001 - datasets wraps the reader's error in its own types
        raise ValueError(_read_problem(path, err)) from None


def _first_rows(path: Path, sep: str, literal_quotes: bool = False) -> tuple[list[str], list[str] | None]:
    """The fields of a CSV or TSV file's first two rows (the header, or the first example, and the next)."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        quoting = csv.QUOTE_NONE if literal_quotes else csv.QUOTE_MINIMAL
        rows = csv.reader((line for line in f if line.strip()), delimiter=sep, quoting=quoting)
        return next(rows, []), next(rows, None)


def _read_problem(path: Path, err: Exception) -> str:
    """What went wrong reading a file, with the line for text that is not UTF-8 (the codec names neither)."""
    kind = FORMATS[path.suffix.lower()]
    cause = err
    while cause is not None and not isinstance(cause, UnicodeDecodeError):
        cause = cause.__cause__ or cause.__context__
    if kind != "parquet" and (cause is not None or _not_utf8(path)):  # Parquet is binary: never UTF-8
        line, byte = _first_bad_byte(path)
        return f"{path} line {line}: byte {byte:#04x} is not UTF-8; expected UTF-8 text"
    root = err  # datasets wraps the reader's own words ("Expected 2 fields in line 3, saw 3") in its error
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    first = next((str(e).strip().splitlines()[0] for e in (root, err) if str(e).strip()), type(err).__name__)
    if "corresponds to no data" in str(err):  # datasets' words for a file with no rows
        return f"{path} has no examples: expected one per row"
    return f"{path} cannot be read as {kind} ({first})"


def _not_utf8(path: Path) -> bool:
    return _first_bad_byte(path) != (0, 0)


def _first_bad_byte(path: Path) -> tuple[int, int]:
    """(line, byte) of the first byte that is not UTF-8, read in blocks; (0, 0) when the file is UTF-8."""
    line, decoder = 1, codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                return line + block[:err.start].count(b"\n"), block[err.start]
            line += block.count(b"\n")
    return 0, 0


def _from_disk(folder: Path, split: str) -> datasets.Dataset:
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.Dataset):
        raise ValueError(f"{folder} holds one split: expected a DatasetDict with train and validation")  # noqa: TRY004  # noqa: TRY004
    if split not in loaded:
        raise ValueError(f"{folder} has splits {list(loaded)}, not {split!r}")
    return loaded[split]


def _from_hub(name: str, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, split=split)
    except ConnectionError as err:
        raise ValueError(f"the Hub dataset {name} cannot be reached ({err}): expected local files (train = ...)") \
            from None


def check_rows(task: Task, ds: datasets.Dataset, where: str) -> datasets.Dataset:
    """The task's columns renamed to text, pair, label; labels mapped to ids (or scores); every row checked.
    Done over Arrow batches, so a file of a million rows is never a Python list."""
    columns = [c for c in (task.text, task.pair, task.label) if c is not None]
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{where} has no column {missing[0]!r}: its columns are {ds.column_names}; expected "
                         f"{columns} (the task's text, pair and label)")
    if len(ds) == 0:
        raise ValueError(f"{where} has no examples: expected one per row after the header")
    ds = ds.select_columns(columns)
    index = {name: i for i, name in enumerate(task.label_names)}

    def convert(batch: dict, rows: list[int]) -> dict:
        out = {"text": batch[task.text], "label": []}
        if task.pair is not None:
            out["pair"] = batch[task.pair]
        for key in ("text", "pair") if task.pair is not None else ("text",):
            for row, value in zip(rows, out[key], strict=True):
                if value is None or not str(value).strip():
                    raise ValueError(f"{where} row {row + 1}: empty {key} in column "
                                     f"{task.text if key == 'text' else task.pair!r}; expected text in every row")
        for row, value in zip(rows, batch[task.label], strict=True):
            out["label"].append(_label(task, index, value, where, row))
        return out

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value(
        "float64" if task.is_regression else "int64"), **({"pair": datasets.Value("string")} if task.pair else {})})
    return ds.map(convert, batched=True, with_indices=True, remove_columns=columns, features=features,
                  desc=f"checking {task.name}")


def _label(task: Task, index: dict[str, int], value, where: str, row: int) -> float | int:
    if task.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(f"{where} row {row + 1}: label {value!r} is not a number; expected a finite score")
        return score
    key = str(value)
    if key not in index and task.data is None and key.isdigit() and int(key) < task.num_labels:
        return int(key)  # GLUE's labels are words, so a number is unambiguously a label id
    if key not in index:
        shown = list(task.label_names) if len(task.label_names) <= 10 else f"{len(task.label_names)} names"
        raise ValueError(f"{where} row {row + 1}: label {value!r} is not one of the task's labels {shown}")
    return index[key]


def content_id(task: Task, split: str) -> str:
    """What the tokenized cache is keyed by: the definition and every data file's bytes (sha256), so an edited
    file is read again and an unchanged one, anywhere, is not."""
    data = task.data
    digest = hashlib.sha256(data.content.encode())
    if data.hub is not None:
        return f"hub:{data.hub}/{split}:{digest.hexdigest()[:16]}"
    files = sorted(f for fs in data.splits.values() for f in fs) if data.dataset is None else \
        sorted(p for p in data.dataset.rglob("*") if p.is_file())
    for path in files:
        digest.update(file_digest(path).encode())
    return f"task:{task.name}/{split}:{digest.hexdigest()[:24]}"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (about 0.05 s for 50 MB): never remembered, since an edit may
    keep the size and the mtime."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# ---- what a federation's devices must agree on ----------------------------------------------------

def label_map(task: Task) -> str:
    """The task's kind and label names in id order, as canonical JSON: what a label id means."""
    return json.dumps({"kind": "regression" if task.is_regression else "classification",
                       "labels": list(task.label_names)}, separators=(",", ":"))


def label_identity(task: Task) -> dict[str, str]:
    """What the server sends each round so that a device whose task file maps labels otherwise refuses it,
    as it refuses another projection: the label map and its fingerprint."""
    return {"label-map": label_map(task), "label-fingerprint": hashlib.sha256(label_map(task).encode()).hexdigest()}


# ---- drafting a definition from a data file ----------------------------------------------------

MAX_DRAFT_LABELS = 1000  # more distinct values than this in a numeric column: a regression score


def draft_task(data_file: str | Path, name: str | None = None) -> str:
    """A TOML definition guessed from a data file's columns (the one whose values are longest: the text; a
    column named like a label, else the one with fewest distinct values: the label), for the user to check."""
    path = Path(data_file)
    if not path.is_file():
        raise ValueError(f"no data file at {path}: expected a CSV, TSV, JSON Lines or Parquet file")
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path} must end in one of {sorted(FORMATS)}")
    ds = read_data_file(path)
    if len(ds) == 0 or len(ds.column_names) < 2:
        raise ValueError(f"{path} has {len(ds)} rows and columns {ds.column_names}: expected a text column and a "
                         "label column")
    sample = ds.select(range(min(len(ds), 10_000)))
    label = next((c for c in ds.column_names if c.lower() in ("label", "labels", "target", "class", "score")),
                 min(ds.column_names, key=lambda c: len(set(map(str, sample[c])))))
    texts = sorted((c for c in ds.column_names if c != label),
                   key=lambda c: -sum(len(str(v)) for v in sample[c]))
    values = sorted(set(map(str, ds.unique(label))), key=_natural)
    regression = len(values) > MAX_DRAFT_LABELS or (all(_is_number(v) for v in values) and
                                                    any("." in v for v in values))
    lines = [f"name = {_toml(name or path.stem)}", f"train = {_toml(path.name)}",
             "# validation = \"dev.csv\"   # else a fixed 10% of train is held out for evaluation",
             f"text = {_toml(texts[0])}"]
    if len(texts) > 1:
        lines.append(f"# pair = {_toml(texts[1])}   # a second text column, for pair tasks")
    lines.append(f"label = {_toml(label)}")
    if regression:
        lines.append('kind = "regression"')
    else:
        lines.append(f"labels = [{', '.join(_toml(v) for v in values)}]")
    return "\n".join(lines) + "\n"


def _natural(value: str) -> tuple:
    return (0, float(value), value) if _is_number(value) else (1, 0.0, value)


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
