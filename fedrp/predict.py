"""Label, scores and logits for text, from an adapter or an exported folder alike: one text, or every row of a
file (CSV, TSV, JSON Lines or Parquet, read through `datasets` as a task's files are) written as JSON Lines."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import datasets
import torch
from tqdm import tqdm

from fedrp.files import check_writable_folder
from fedrp.inputs import batch_inputs
from fedrp.spec import MAX_LENGTH
from fedrp.tasks import FORMATS, read_data_file

CHECK_BATCH = 10_000  # rows per Arrow batch when checking an input file's text columns
ID_COLUMN = "id"  # an input file's column copied into each prediction, when it has one


@torch.no_grad()
def predict(model: torch.nn.Module, label_names: Sequence[str], texts: Sequence[str],
            pairs: Sequence[str] | None = None, max_length: int = MAX_LENGTH) -> list[dict]:
    """One {label, logits, scores} per text: scores are the softmax per label name; a single-output head is a
    regression score (its label), with no scores."""
    model.eval()
    batch = batch_inputs(model.tokenizer, texts, pairs, model.pooling, max_length)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
    return [answer(row, label_names) for row in logits]


def answer(row: torch.Tensor, label_names: Sequence[str]) -> dict:
    """One row of logits as a label, its logits and (classification) a probability per label name."""
    if row.numel() == 1:
        return {"label": float(row[0]), "logits": [float(row[0])]}
    names = [label_names[i] if i < len(label_names) else str(i) for i in range(row.numel())]
    probs = torch.softmax(row.double(), dim=0)
    return {"label": names[int(row.argmax())], "logits": [float(x) for x in row],
            "scores": {name: float(p) for name, p in zip(names, probs, strict=True)}}


def recorded_task(name: str | None, definition: dict | None) -> dict | None:
    """The task definition an adapter or export recorded; for one from before definitions were recorded, the
    definition of the GLUE task it names; else None."""
    if definition is not None:
        return definition
    from fedrp import artifact, glue

    builtin = glue.TASKS.get(name or "")
    return artifact.task_definition(builtin) if builtin is not None else None


def check_pair(definition: dict | None, has_pair: bool, option: str) -> None:
    """A second text only for a pair task, and a pair task only with one (when the task is known)."""
    if definition is None:
        return
    if has_pair and definition["pair"] is None:
        raise ValueError(f"{option} given, but the adapter's task {definition['name']} classifies one sentence")
    if not has_pair and definition["pair"] is not None:
        raise ValueError(f"the adapter's task {definition['name']} classifies sentence pairs: give {option} too")


def input_columns(definition: dict | None, text: str | None, pair: str | None) -> tuple[str, str | None]:
    """The text and pair columns to read: --text-column and --pair-column, else the recorded task's."""
    if pair is not None:
        check_pair(definition, True, "--pair-column")
    if text is None:
        if definition is None:
            raise ValueError("the adapter records no task definition to name its text column: pass --text-column (and "
                             "--pair-column for a pair task)")
        text = definition["text"]
    if pair is None and definition is not None:
        pair = definition["pair"]
    return text, pair


def read_input(path: str | os.PathLike, text: str, pair: str | None) -> datasets.Dataset:
    """The input file, checked before any model loads: it exists, has rows, has the columns and has text in
    every row."""
    path = Path(path)
    ds = _read(path)
    columns = [c for c in (text, pair) if c is not None]
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r}: its columns are {ds.column_names}; pass "
                         f"--text-column{' and --pair-column' if pair else ''} to read others")
    for column in columns:
        _check_text(ds, column, path)
    return ds


def _read(path: Path) -> datasets.Dataset:
    """A CSV, TSV, JSON Lines or Parquet file through fedrp.tasks' reader (CSV and TSV as text, as written);
    one line when it is missing, of another format, empty, unreadable or not UTF-8."""
    if not path.is_file():
        raise FileNotFoundError(f"no input file at {path}: expected a CSV, TSV, JSON Lines or Parquet file")
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--input {path} must end in one of {sorted(FORMATS)}")
    if FORMATS[path.suffix.lower()] == "parquet":
        _check_parquet(path)
    return read_data_file(path)


def _check_parquet(path: Path) -> None:
    """A Parquet file's footer is readable and counts rows: checked first, as datasets' reader fails on neither
    with a message that says so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} cannot be read as parquet ({first})") from None
    if rows == 0:
        raise ValueError(f"{path} has no rows: expected one text per row")


def _check_text(ds: datasets.Dataset, column: str, path: Path) -> None:
    """Every row has text in `column`, read an Arrow batch at a time."""
    for start, batch in enumerate(ds.select_columns([column]).iter(batch_size=CHECK_BATCH)):
        for offset, value in enumerate(batch[column]):
            if value is None or not str(value).strip():
                row = start * CHECK_BATCH + offset + 1
                raise ValueError(f"{path} row {row}: no text in column {column!r}; expected text in every row")


def check_output(output: str | os.PathLike, input_path: str | os.PathLike) -> None:
    """--output is a file to write (replacing any there), never the input itself nor a folder."""
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder: expected the JSON Lines file to write")
    if output.exists() and Path(input_path).exists() and output.samefile(input_path):
        raise ValueError(f"--output {output} is the input file: expected another file for the predictions")
    check_writable_folder(output.parent, "--output", "the predictions")


def predict_rows(model: torch.nn.Module, label_names: Sequence[str], ds: datasets.Dataset, text: str,
                 pair: str | None, batch_size: int = 64, max_length: int = MAX_LENGTH) -> Iterator[dict]:
    """One prediction per row, in the file's order and batch by batch: `row` (from 0), the row's `id` when the
    file has that column, then what `predict` gives."""
    has_id = ID_COLUMN in ds.column_names and ID_COLUMN not in (text, pair)
    columns = [c for c in (text, pair, ID_COLUMN if has_id else None) if c is not None]
    row = 0
    for batch in ds.select_columns(columns).iter(batch_size=batch_size):
        texts = [str(t) for t in batch[text]]
        pairs = [str(p) for p in batch[pair]] if pair is not None else None
        for i, result in enumerate(predict(model, label_names, texts, pairs, max_length)):
            yield {"row": row, **({"id": batch[ID_COLUMN][i]} if has_id else {}), **result}
            row += 1


def write_jsonl(predictions: Iterator[dict], out: TextIO, total: int, progress: bool) -> int:
    """One JSON object a line; a progress bar on stderr when asked. Returns the number of lines."""
    count = 0
    for prediction in tqdm(predictions, total=total, unit="row", disable=not progress, desc="predicting"):
        out.write(json.dumps(prediction, ensure_ascii=False, default=str) + "\n")
        count += 1
    return count
