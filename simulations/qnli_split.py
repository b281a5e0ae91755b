"""QNLI's dev set cut into a training part and a held-out part (QNLI has only its dev set here):
a seeded hash order, stratified by label, written as a derived GLUE folder (QNLI/train.tsv, dev.tsv)."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

from fedrp.files import write_text


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
            "how": "simulations.qnli_split.split_qnli: per label, the rows first in sha256('{seed}:{row}') order"}
    _write_if_changed(out / "QNLI" / "split.json", json.dumps(note, indent=1) + "\n")
    return len(parts["train"]), len(parts["dev"])


def _write_if_changed(path: Path, text: str) -> None:
    """Leave an identical file alone: its mtime keys fedrp's tokenization cache."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)
