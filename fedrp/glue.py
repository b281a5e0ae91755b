"""GLUE tasks, built-in task definitions (fedrp.tasks.Task): where each one's text and labels live, from a local
folder or the hub; and the front door to every task, GLUE's or a user's TOML file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import datasets

from fedrp import tasks
from fedrp.tasks import Task

GLUE_DIR_ENV = "FEDRP_GLUE_DIR"
HUB_DATASET = "nyu-mll/glue"


_ENT = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cola", "CoLA", 3, None, 1, ("unacceptable", "acceptable"), ("matthews_correlation",), "sentence", None, header=False),
    Task("sst2", "SST-2", "sentence", None, "label", ("negative", "positive"), ("accuracy",), "sentence", None),
    Task("mrpc", "MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent"), ("f1", "accuracy"), "sentence1", "sentence2"),
    Task("qqp", "QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate"), ("f1", "accuracy"), "question1", "question2"),
    Task("stsb", "STS-B", "sentence1", "sentence2", "score", (), ("pearson", "spearmanr"), "sentence1", "sentence2"),
    Task("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"), ("accuracy",),
         "premise", "hypothesis", dev_splits=("dev_matched", "dev_mismatched")),
    Task("qnli", "QNLI", "question", "sentence", "label", _ENT, ("accuracy",), "question", "sentence"),
    Task("rte", "RTE", "sentence1", "sentence2", "label", _ENT, ("accuracy",), "sentence1", "sentence2"),
    Task("wnli", "WNLI", "sentence1", "sentence2", "label", ("not_entailment", "entailment"), ("accuracy",), "sentence1", "sentence2"),
]}

_HUB_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def get_task(name: str) -> Task:
    """A GLUE task by name, or a user's task by the path of its TOML definition (fedrp.tasks)."""
    if tasks.is_task_file(name):
        return tasks.load_task(name)
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; expected one of {sorted(TASKS)}, or a task file (.toml)")
    return TASKS[key]


def data_dir(given: str | os.PathLike | None) -> Path | None:
    """The local GLUE folder: --data-dir, else $FEDRP_GLUE_DIR, else None (the hub)."""
    value = given if given is not None else os.environ.get(GLUE_DIR_ENV)
    return Path(value) if value else None


def tsv_path(task: Task, split: str, folder: Path) -> Path:
    """The split's file in the official layout, or one line saying what was expected."""
    path = folder / task.folder / f"{split}.tsv"
    if not path.is_file():
        layout = f"<dir>/{task.folder}/{{train,{','.join(task.dev_splits)}}}.tsv"
        raise FileNotFoundError(f"no GLUE file at {path}: expected the official layout {layout}")
    return path


def read_tsv(task: Task, path: Path) -> datasets.Dataset:
    """One official TSV split, read and checked as a user's files are (fedrp.tasks), with quoting off as the
    GLUE files need (quotes are literal text) and CoLA's header-less columns named by position."""
    ds = tasks.read_data_file(path, literal_quotes=True, header=task.header)
    columns = dataclasses.replace(task, text=str(task.text), pair=None if task.pair is None else str(task.pair),
                                  label=str(task.label))
    return tasks.check_rows(columns, ds, str(path))


def _from_hub(task: Task, split: str) -> datasets.Dataset:
    try:
        ds = datasets.load_dataset(HUB_DATASET, task.name, split=_HUB_SPLITS[split])
    except ConnectionError as err:  # offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE) or no network
        raise ValueError(f"no GLUE folder was given and the Hub cannot be reached ({err}): expected --data-dir "
                         f"(data-dir) or ${GLUE_DIR_ENV} naming a folder with {task.folder}/{split}.tsv") from None
    columns = {task.hub_text: "text", "label": "label"}
    if task.hub_pair:
        columns[task.hub_pair] = "pair"
    return ds.select_columns(list(columns)).rename_columns({k: v for k, v in columns.items() if k != v})


def load_split(task: str | Task, split: str = "train", data_dir_: str | os.PathLike | None = None) -> datasets.Dataset:
    """Columns `text`, optional `pair`, `label` (int class, or float score for STS-B)."""
    task = get_task(task) if isinstance(task, str) else task
    if split == "dev":
        split = task.dev_splits[0]
    if split not in ("train", *task.dev_splits):
        raise ValueError(f"task {task.name} has splits {['train', *task.dev_splits]}, not {split!r}")
    if task.data is not None:
        return tasks.read_split(task, split)
    folder = data_dir(data_dir_)
    if folder is None:
        return _from_hub(task, split)
    return read_tsv(task, tsv_path(task, split, folder))


def source_id(task: Task, split: str, data_dir_: str | os.PathLike | None) -> str:
    """What identifies a split's content for caching: the file's path, size and mtime, or the hub name; a
    user's task, its files' content."""
    if task.data is not None:
        return tasks.content_id(task, split)
    folder = data_dir(data_dir_)
    if folder is None:
        return f"hub:{HUB_DATASET}/{task.name}/{split}"
    path = tsv_path(task, split, folder).resolve()
    stat = path.stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
