"""GLUE from the official TSV layout: every task present in ../shared/glue, and the metrics."""

import math

import numpy as np
import pytest

from fedrp import glue, metrics

# Row counts and first rows as ../shared/glue/SOURCES.md documents them.
PRESENT = {
    ("sst2", "train"): (67349, "hide new secretions from the parental units ", 0),
    ("sst2", "dev"): (872, "it 's a charming and often affecting journey . ", 1),
    ("cola", "train"): (8551, None, None),
    ("cola", "dev"): (1043, "The sailors rode the breeze clear of the rocks.", 1),
    ("mrpc", "train"): (3668, None, None),
    ("mrpc", "dev"): (408, None, 1),
    ("stsb", "train"): (5749, "A plane is taking off.", 5.0),
    ("stsb", "dev"): (1500, "A man with a hard hat is dancing.", 5.0),
    ("rte", "train"): (2490, None, None),
    ("rte", "dev"): (277, None, 1),
    ("wnli", "train"): (635, None, None),
    ("wnli", "dev"): (71, "The drain is clogged with hair. It has to be cleaned.", 0),
    ("qnli", "dev"): (5463, "What came into force after the new constitution was herald?", 0),
}


@pytest.mark.parametrize("task, split", sorted(PRESENT))
def test_every_present_split_reads_completely(glue_dir, task, split):
    rows, first_text, first_label = PRESENT[(task, split)]
    ds = glue.load_split(task, split, glue_dir)
    t = glue.get_task(task)
    assert len(ds) == rows
    assert ("pair" in ds.column_names) == (t.pair is not None)
    if first_text is not None:
        assert ds[0]["text"] == first_text
    if first_label is not None:
        assert ds[0]["label"] == first_label
    labels = np.asarray(ds["label"])
    if t.is_regression:
        assert labels.min() >= 0.0 and labels.max() <= 5.0
    else:
        assert set(np.unique(labels)) == set(range(t.num_labels))


def test_cola_is_read_without_a_header(glue_dir):
    ds = glue.load_split("cola", "train", glue_dir)
    assert ds[0] == {"text": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1}


def test_quotes_are_literal_text(glue_dir):
    """With quoting on, MRPC's unbalanced quote marks would swallow rows."""
    ds = glue.load_split("mrpc", "dev", glue_dir)
    assert ds[0]["pair"].startswith('" The foodservice pie business')
    assert "Quality" not in ds.column_names  # the byte-order mark before the header is handled


def test_missing_task_names_the_path_and_layout(glue_dir):
    with pytest.raises(FileNotFoundError, match=r"no GLUE file at .*QQP/train.tsv: expected the official layout <dir>/QQP/\{train,dev\}.tsv"):
        glue.load_split("qqp", "train", glue_dir)
    with pytest.raises(FileNotFoundError, match=r"MNLI/\{train,dev_matched,dev_mismatched\}"):
        glue.load_split("mnli", "dev", glue_dir)
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'"):
        glue.get_task("squad")


def _write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in ([header] if header else []) + rows) + "\n")


def test_tasks_absent_here_read_from_their_official_layout(tmp_path):
    """MNLI, QQP and QNLI train are not in ../shared/glue: small files in their official columns."""
    mnli_cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    _write(tmp_path / "MNLI" / "train.tsv", mnli_cols,
           [["0", "1", "1e", "g", "", "", "", "", "A man sleeps.", "A person rests.", "entailment", "entailment"],
            ["1", "2", "2c", "g", "", "", "", "", "It rains.", "It is dry.", "contradiction", "contradiction"]])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", mnli_cols[:-1] + ["label2", "gold_label"],
           [["0", "1", "1n", "g", "", "", "", "", "He ran.", "He was late.", "neutral", "neutral", "neutral"]])
    _write(tmp_path / "QQP" / "train.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
           [["0", "1", "2", "How do I cook rice?", "What is the way to cook rice?", "1"]])
    mnli = glue.load_split("mnli", "train", tmp_path)
    assert mnli["label"] == [0, 2] and mnli[1]["pair"] == "It is dry."
    assert glue.load_split("mnli", "dev_mismatched", tmp_path)["label"] == [1]
    assert glue.load_split("qqp", "train", tmp_path)[0] == {
        "text": "How do I cook rice?", "pair": "What is the way to cook rice?", "label": 1}


def test_a_bad_label_names_file_row_and_expectation(tmp_path):
    _write(tmp_path / "RTE" / "train.tsv", ["index", "sentence1", "sentence2", "label"],
           [["0", "a", "b", "entailment"], ["1", "c", "d", "maybe"]])
    with pytest.raises(ValueError, match=r"RTE/train.tsv row 2: label 'maybe' is not one of the task's labels "
                                         r"\['entailment', 'not_entailment'\]"):
        glue.load_split("rte", "train", tmp_path)


def test_a_file_that_is_not_utf8_names_itself_and_the_line(tmp_path):
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    path.write_bytes(b"sentence\tlabel\na fine film\t1\ncaf\xe9 noir\t0\n")  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"SST-2/train.tsv line 3: byte 0xe9 is not UTF-8"):
        glue.load_split("sst2", "train", tmp_path)


@pytest.mark.parametrize("score", ["nan", "inf", "-Infinity"])
def test_a_non_finite_score_names_file_and_row(tmp_path, score):
    """float() reads these; a NaN score would surface only later, as a loss error in training."""
    _write(tmp_path / "STS-B" / "train.tsv", ["index", "sentence1", "sentence2", "score"],
           [["0", "a", "b", "3.8"], ["1", "c", "d", score]])
    with pytest.raises(ValueError, match=rf"STS-B/train.tsv row 2: label '{score}' is not a number; expected a "
                                         rf"finite score"):
        glue.load_split("stsb", "train", tmp_path)


def test_environment_variable_names_the_folder(glue_dir, monkeypatch):
    monkeypatch.setenv("FEDRP_GLUE_DIR", str(glue_dir))
    assert len(glue.load_split("wnli", "dev")) == 71


def test_metrics_against_hand_computed_values():
    y, p = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
    got = metrics.compute(["accuracy", "f1", "matthews_correlation"], y, p)
    assert got["accuracy"] == 0.75
    assert got["f1"] == pytest.approx(0.8)  # precision 1, recall 2/3
    assert got["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))  # (tp*tn - fp*fn) / sqrt(...)
    x, s = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 9.0, 5.0])
    got = metrics.compute(["pearson", "spearmanr"], x, s)
    # dx = (-1.5,-.5,.5,1.5), dy = (-3,-1,4,0): r = (4.5 + .5 + 2 + 0) / sqrt(5 * 26); ranks (1,2,4,3): rho = 1 - 6*2/(4*15)
    assert got["pearson"] == pytest.approx(7 / math.sqrt(130))
    assert got["spearmanr"] == pytest.approx(0.8)


def test_metrics_refuse_mismatched_lengths_and_stay_finite_on_constants():
    with pytest.raises(ValueError, match="one prediction per label"):
        metrics.compute(["accuracy"], np.array([1, 0]), np.array([1]))
    got = metrics.compute(["pearson", "matthews_correlation"], np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    assert got == {"pearson": 0.0, "matthews_correlation": 0.0}


def test_a_stray_tab_names_the_file_and_line(tmp_path):
    """A tab inside a sentence shifts every column after it: refused, where it would misread the label."""
    path = tmp_path / "SST-2" / "train.tsv"
    path.parent.mkdir()
    path.write_text("sentence\tlabel\na fine film\t1\na dull\tfilm\t0\n")
    with pytest.raises(ValueError, match=r"SST-2/train.tsv cannot be read as csv .*Expected 2 fields in line 3, saw 3"):
        glue.load_split("sst2", "train", tmp_path)
    path.write_text("sentence\tlabel\nfine\tfilm\t1\na dull film\t0\n")  # in the first example: pandas would
    with pytest.raises(ValueError, match=r"SST-2/train.tsv line 2: 3 fields, expected 2 like the header"):
        glue.load_split("sst2", "train", tmp_path)  # read "fine" as an index and "film" as the text, silently
