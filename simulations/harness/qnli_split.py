"""QNLI's dev set cut into a training part and a held-out part (QNLI has only its dev set here), by groups
of rows that share a question or a sentence (SQuAD pairs one question with several sentences and one sentence
with several questions): each group lies wholly on one side, so that no question and no sentence of the
held-out part is seen in training. The groups are picked in a seeded hash order, up to each label's share,
and the split is written as a derived GLUE folder (QNLI/train.tsv, dev.tsv)."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from fedrp.files import write_text


def read_rows(path: Path) -> list[list[str]]:
    """TSV rows exactly as fedrp.glue reads them (quoting off)."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as f:
        return [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]


def label_quota(labels: Sequence[str], n: int) -> dict[str, int]:
    """How many of n held-out rows each label gets: its share of the rows, rounded by largest remainder."""
    if not 0 < n < len(labels):
        raise ValueError(f"cannot hold out {n} of {len(labels)} rows: expected 0 < held-out < {len(labels)}")
    counts = Counter(labels)
    exact = {lab: n * c / len(labels) for lab, c in counts.items()}
    quota = {lab: int(v) for lab, v in exact.items()}
    for lab in sorted(exact, key=lambda x: (quota[x] - exact[x], x))[: n - sum(quota.values())]:
        quota[lab] += 1
    return quota


def row_groups(questions: Sequence[str], sentences: Sequence[str]) -> list[int]:
    """A group label per row: rows sharing a question or a sentence, also through other rows, share a label,
    so that splitting by group keeps every question and every sentence on one side."""
    # A graph of rows and distinct strings (questions and sentences apart, compared exactly as read): each row
    # links to its question and to its sentence; a connected component is a group.
    strings: dict[tuple[str, str], int] = {}
    edges = np.array([(row, len(questions) + strings.setdefault((column, text), len(strings)))
                      for column, texts in (("question", questions), ("sentence", sentences))
                      for row, text in enumerate(texts)], dtype=np.int64).reshape(-1, 2)
    size = len(questions) + len(strings)
    graph = coo_array((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(size, size))
    _, label = connected_components(graph, directed=False)
    return label[: len(questions)].tolist()


def held_out_indices(labels: Sequence[str], n: int, seed: int, groups: Sequence[int] | None = None) -> set[int]:
    """n row indices made of whole groups (default: each row alone) keeping each label's share; groups are
    taken in a seeded sha256 order of their first row, each only where it fits every label's remaining quota."""
    quota = label_quota(labels, n)
    members: dict[int, list[int]] = {}
    for row, group in enumerate(range(len(labels)) if groups is None else groups):
        members.setdefault(group, []).append(row)
    # A group's identity is its first (smallest) row index: the order does not depend on how groups are labelled.
    order = sorted(members.values(), key=lambda rows: hashlib.sha256(f"{seed}:{rows[0]}".encode()).digest())
    held: set[int] = set()
    for rows in order:
        need = Counter(labels[r] for r in rows)
        if all(need[lab] <= quota[lab] for lab in need):
            held.update(rows)
            quota = {lab: left - need[lab] for lab, left in quota.items()}
        if not any(quota.values()):
            return held
    raise ValueError(f"cannot fill the held-out quota {label_quota(labels, n)} with whole question/sentence groups "
                     f"({quota} left over): expected groups small enough to make up exactly {n} rows")


def split_qnli(source: Path, out: Path, held_out: int, seed: int) -> tuple[int, int]:
    """Write out/QNLI/{train,dev}.tsv from QNLI's dev set (rows in file order); (train rows, held-out rows)."""
    if not source.is_file():
        raise FileNotFoundError(f"no QNLI dev set at {source}: expected the official GLUE layout <dir>/QNLI/dev.tsv")
    header, *rows = read_rows(source)
    if not {"question", "sentence", "label"} <= set(header):
        raise ValueError(f"{source} has no 'question', 'sentence' or 'label' column in its header {header}: "
                         "expected the official QNLI TSV")
    question, sentence, label = (header.index(c) for c in ("question", "sentence", "label"))
    groups = row_groups([r[question] for r in rows], [r[sentence] for r in rows])
    held = held_out_indices([r[label] for r in rows], held_out, seed, groups)
    parts = {"train": [r for i, r in enumerate(rows) if i not in held],
             "dev": [r for i, r in enumerate(rows) if i in held]}
    for split, part in parts.items():
        _write_if_changed(out / "QNLI" / f"{split}.tsv", "".join("\t".join(r) + "\n" for r in [header, *part]))
    note = {"source": str(source), "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "seed": seed, "held_out": len(parts["dev"]), "train": len(parts["train"]),
            "how": "simulations.harness.qnli_split.split_qnli: rows sharing a question or a sentence (transitively) form "
                   "a group, kept whole on one side; groups taken in sha256('{seed}:{first row}') order where they "
                   "fit each label's remaining held-out quota (largest remainder)"}
    _write_if_changed(out / "QNLI" / "split.json", json.dumps(note, indent=1) + "\n")
    return len(parts["train"]), len(parts["dev"])


def _write_if_changed(path: Path, text: str) -> None:
    """Leave an identical file alone: its mtime keys fedrp's tokenization cache."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)
