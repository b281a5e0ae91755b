"""QNLI's dev split keeps every question and every sentence on one side, and each label's share."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from simulations.harness.qnli_split import label_quota, read_rows, row_groups, split_qnli

HEADER = ["index", "question", "sentence", "label"]


@pytest.fixture(scope="module")
def qnli_dev(glue_dir) -> Path:
    path = glue_dir / "QNLI" / "dev.tsv"
    if not path.is_file():
        pytest.skip(f"no QNLI dev set at {path}: the shared GLUE copy lacks QNLI")
    return path


def parts(out: Path) -> tuple[list[list[str]], list[list[str]]]:
    """The (train, held-out) rows a split wrote, headers dropped."""
    train, held = (read_rows(out / "QNLI" / f"{s}.tsv") for s in ("train", "dev"))
    assert train[0] == held[0] == HEADER
    return train[1:], held[1:]


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in [HEADER, *rows]), encoding="utf-8")
    return path


def test_no_question_or_sentence_is_on_both_sides_of_the_real_split(tmp_path, qnli_dev):
    assert split_qnli(qnli_dev, tmp_path, 1000, 0) == (4463, 1000)
    train, held = parts(tmp_path)
    assert (len(train), len(held)) == (4463, 1000)
    assert sorted(train + held) == sorted(read_rows(qnli_dev)[1:])  # every row exactly once, none altered
    for column in (1, 2):  # question, sentence
        assert not {r[column] for r in train} & {r[column] for r in held}
    # 2,702 entailment and 2,761 not_entailment of 5,463: 494.6 and 505.4 of 1,000, the spare row to the larger
    # remainder.
    labels = [r[3] for r in train + held]
    assert Counter(r[3] for r in held) == {"entailment": 495, "not_entailment": 505} == label_quota(labels, 1000)


def test_the_same_seed_gives_the_same_split_and_another_seed_another(tmp_path, qnli_dev):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        split_qnli(qnli_dev, tmp_path / name, 1000, seed)
    read = {name: parts(tmp_path / name) for name in "abc"}
    assert read["a"] == read["b"]
    assert {r[0] for r in read["a"][1]} != {r[0] for r in read["c"][1]}


def test_rows_chained_through_a_question_then_a_sentence_land_together(tmp_path):
    # Row 0 and row 1 share a question, row 1 and row 2 a sentence: one group, though 0 and 2 share nothing.
    rows = [["0", "qA", "s0", "entailment"], ["1", "qA", "s1", "not_entailment"], ["2", "qB", "s1", "entailment"],
            *([str(i), f"q{i}", f"s{i}", "entailment" if i % 2 else "not_entailment"] for i in range(3, 9))]
    source = write_tsv(tmp_path / "dev.tsv", rows)
    groups = row_groups([r[1] for r in rows], [r[2] for r in rows])
    assert groups[0] == groups[1] == groups[2] and len(set(groups)) == 7
    sides = set()
    for seed in range(20):
        assert split_qnli(source, tmp_path / str(seed), 3, seed) == (6, 3)
        held_ids = {r[0] for r in parts(tmp_path / str(seed))[1]}
        assert held_ids >= {"0", "1", "2"} or not held_ids & {"0", "1", "2"}
        sides.add("0" in held_ids)
    assert sides == {True, False}  # some seeds hold the chain out, others train on it


def test_a_quota_the_groups_cannot_fill_is_refused_in_one_line(tmp_path):
    # Five rows share one question: a group bigger than the 3 rows held out; the two rows left cannot fill 3.
    rows = [*([str(i), "qA", f"s{i}", "entailment" if i % 2 else "not_entailment"] for i in range(5)),
            ["5", "qB", "s5", "entailment"], ["6", "qC", "s6", "not_entailment"]]
    with pytest.raises(ValueError, match="cannot fill the held-out quota") as err:
        split_qnli(write_tsv(tmp_path / "dev.tsv", rows), tmp_path / "out", 3, 0)
    assert "\n" not in str(err.value)
