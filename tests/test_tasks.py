"""A user's own task: a TOML definition, its data read through `datasets`, bad data refused in one line."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from fedrp import glue
from fedrp.tasks import load_task

SST2 = ("negative", "positive")


def write_task(folder: Path, body: str, files: dict[str, str] | None = None) -> str:
    """task.toml (and data files) in `folder`; the definition's path, as --task takes it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "task.toml").write_text(body, encoding="utf-8")
    return str(folder / "task.toml")


REVIEWS = 'name = "reviews"\ntrain = "train.csv"\nvalidation = "dev.csv"\ntext = "review"\nlabel = "stars"\n'


def test_sst2_as_a_csv_of_its_own_reads_as_the_built_in_task(tmp_path, glue_dir):
    """Renamed columns and string labels: the same texts and label ids, row for row, as GLUE's own SST-2."""
    import csv

    for split in ("train", "dev"):
        ds = glue.load_split("sst2", split, glue_dir)
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["review", "sentiment"])
            w.writerows([t, SST2[label]] for t, label in zip(ds["text"], ds["label"], strict=True))
    path = write_task(tmp_path, 'name = "reviews"\ntrain = "train.csv"\nvalidation = "dev.csv"\ntext = "review"\n'
                                'label = "sentiment"\nlabels = ["negative", "positive"]\n')
    task = glue.get_task(path)
    assert (task.name, task.label_names, task.metrics) == ("reviews", SST2, ("accuracy", "macro_f1"))
    for split in ("train", "dev"):
        mine, built_in = glue.load_split(path, split), glue.load_split("sst2", split, glue_dir)
        assert list(mine["text"]) == list(built_in["text"]) and list(mine["label"]) == list(built_in["label"]), split


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "disk"])
def test_every_format_gives_the_same_rows(tmp_path, fmt):
    """Three classes named by their digits (star ratings), a pair column, sentences that look like numbers or
    like missing values: read as written."""
    rows = [{"q": "NA", "a": "null", "stars": "3"}, {"q": "12", "a": "b", "stars": "1"},
            {"q": "good", "a": "c", "stars": "5"}]
    ds = datasets.Dataset.from_list(rows)
    body = 'name = "stars"\ntext = "q"\npair = "a"\nlabel = "stars"\nlabels = [1, 3, 5]\n'
    if fmt == "disk":
        datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "saved"))
        body += 'dataset = "saved"\n'
    else:
        for split in ("train", "dev"):
            target = tmp_path / f"{split}.{fmt}"
            if fmt == "csv":
                ds.to_csv(str(target), index=False)
            elif fmt == "tsv":
                ds.to_csv(str(target), index=False, sep="\t")
            elif fmt == "jsonl":
                ds.to_json(str(target), lines=True)
            else:
                ds.to_parquet(str(target))
        body += f'train = "train.{fmt}"\nvalidation = "dev.{fmt}"\n'
    path = write_task(tmp_path, body)
    for split in ("train", "dev"):
        got = glue.load_split(path, split)
        assert list(got["text"]) == ["NA", "12", "good"] and list(got["pair"]) == ["null", "b", "c"]
        assert list(got["label"]) == [1, 0, 2]


def test_a_regression_task_and_one_without_validation_files(tmp_path):
    lines = "text,score\n" + "".join(f"sentence {i},{i % 5}.5\n" for i in range(40))
    path = write_task(tmp_path, 'name = "scores"\ntrain = "train.csv"\ntext = "text"\nlabel = "score"\n'
                                'kind = "regression"\n', {"train.csv": lines})
    task = glue.get_task(path)
    assert task.is_regression and task.metrics == ("pearson", "spearmanr") and task.num_labels == 1
    train, dev = glue.load_split(path, "train"), glue.load_split(path, "dev")
    assert (len(train), len(dev)) == (36, 4)  # a fixed tenth held out
    assert sorted([*train["text"], *dev["text"]]) == sorted(f"sentence {i}" for i in range(40))
    assert list(dev["text"]) == list(glue.load_split(path, "dev")["text"])
    assert dev["label"][0] == float(dev["text"][0].split()[1]) % 5 + 0.5


@pytest.mark.parametrize("body, message", [
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b", "a"]\n',
     "label 'a' is listed twice in 'labels'"),
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\nlabels = ["a"]\n', "at least 2"),
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\n', "'labels' must list the label names"),
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\nkind = "regression"\nlabels = ["a", "b"]\n',
     "a regression task has no labels"),
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b"]\nmetrics = ["auc"]\n',
     r"unknown metrics \['auc'\]"),
    ('name = "x"\ntrain = "nope.csv"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b"]\n', "train file"),
    ('name = "x"\ntrain = "d.xlsx"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b"]\n', "must end in one of"),
    ('name = "x"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b"]\n', "expected exactly one of 'train'"),
    ('name = "x"\ntrain = "d.csv"\ntext = "t"\nlabel = "l"\nlabels = ["a", "b"]\ncolumns = 3\n', "unknown keys"),
    ('name = x\n', "is not valid TOML"),
])
def test_a_bad_definition_is_one_line(tmp_path, body, message):
    (tmp_path / "d.xlsx").write_text("x")
    path = write_task(tmp_path, body, {"d.csv": "t,l\nhello,a\n"})
    with pytest.raises(ValueError, match=message):
        load_task(path)


GOOD = "review,stars\nfine,good\nbad,poor\n"


@pytest.mark.parametrize("data, message", [
    ("text,stars\nfine,good\n", "has no column 'review'"),
    ("review,stars\nfine,good\nbad,awful\n", "row 2: label 'awful' is not one of the task's labels"),
    ("review,stars\nfine,good\n  ,poor\n", "row 2: empty text in column 'review'"),
    ("", "is empty"),
    ("review,stars\n", "has no examples"),
    (b"review,stars\nfine,good\nbad\xff,poor\n", "line 3: byte 0xff is not UTF-8"),
])
def test_bad_data_names_the_file_the_row_and_the_problem(tmp_path, data, message):
    path = write_task(tmp_path, REVIEWS + 'labels = ["poor", "good"]\n', {"dev.csv": GOOD})
    if isinstance(data, bytes):
        (tmp_path / "train.csv").write_bytes(data)
    else:
        (tmp_path / "train.csv").write_text(data, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as err:
        glue.load_split(path, "train")
    assert str(tmp_path / "train.csv") in str(err.value) and "\n" not in str(err.value)


def test_a_regression_label_that_is_not_a_number(tmp_path):
    path = write_task(tmp_path, REVIEWS + 'kind = "regression"\n',
                      {"train.csv": "review,stars\nfine,4.5\nbad,lots\n", "dev.csv": "review,stars\nok,1\n"})
    with pytest.raises(ValueError, match=r"train.csv row 2: label 'lots' is not a number"):
        glue.load_split(path, "train")
    (tmp_path / "train.csv").write_text("review,stars\nfine,4.5\nbad,inf\n")
    with pytest.raises(ValueError, match=r"row 2: label 'inf' is not a number; expected a finite score"):
        glue.load_split(path, "train")


def test_the_tokenized_cache_follows_the_files_content(tmp_path):
    path = write_task(tmp_path, REVIEWS + 'labels = ["poor", "good"]\n', {"train.csv": GOOD, "dev.csv": GOOD})
    task = glue.get_task(path)
    before = glue.source_id(task, "train", None)
    assert glue.source_id(glue.get_task(path), "train", None) == before
    (tmp_path / "train.csv").write_text(GOOD + "meh,poor\n")
    assert glue.source_id(task, "train", None) != before


def test_fedrp_train_refuses_bad_data_before_the_model_loads_and_writes_nothing(tmp_path, capsys):
    from fedrp.cli import main

    path = write_task(tmp_path, REVIEWS + 'labels = ["poor", "good"]\n',
                      {"train.csv": "review,stars\nfine,good\nbad,awful\n", "dev.csv": GOOD})
    assert main(["train", "--task", path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 2: label 'awful' is not one of the task's labels" in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_drafted_definition_reads_its_file(tmp_path):
    """`fedrp task init`'s guess: the longest column is the text, the label column's values are the labels in
    natural order (2 before 10), a float column is a regression score; what it drafts loads as written."""
    from fedrp.tasks import draft_task

    rows = "".join(f"a rather long message number {i},{(i % 3) * 4 + 2}\n" for i in range(30))
    (tmp_path / "tickets.csv").write_text("message,queue\n" + rows)
    draft = draft_task(tmp_path / "tickets.csv")
    assert 'text = "message"' in draft and 'label = "queue"' in draft and 'labels = ["2", "6", "10"]' in draft
    (tmp_path / "tickets.toml").write_text(draft)
    task = load_task(tmp_path / "tickets.toml")
    assert (task.name, task.label_names) == ("tickets", ("2", "6", "10"))
    assert sorted(set(glue.load_split(str(tmp_path / "tickets.toml"), "train")["label"])) == [0, 1, 2]
    (tmp_path / "scores.jsonl").write_text("".join(f'{{"s": "text {i}", "score": {i / 7:.3f}}}\n' for i in range(20)))
    assert 'kind = "regression"' in draft_task(tmp_path / "scores.jsonl")
    with pytest.raises(ValueError, match="expected a text column and a label column"):
        (tmp_path / "one.csv").write_text("only\nx\n")
        draft_task(tmp_path / "one.csv")


def test_a_federation_with_fewer_examples_than_its_clients_need_is_refused_before_it_starts(tmp_path, capsys):
    from simulations.run import main

    datasets.disable_progress_bars()  # as a fresh `python -m simulations.run` does before importing datasets
    rows = "review,stars\n" + "".join(f"text {i},{('poor', 'good')[i % 2]}\n" for i in range(40))
    path = write_task(tmp_path, REVIEWS + 'labels = ["poor", "good"]\n', {"train.csv": rows, "dev.csv": GOOD})
    with pytest.raises(SystemExit) as exit_:
        main(["--engine", "inprocess", "--task", path, "--num-supernodes", "10", "--min-partition-size", "5",
              "--store", str(tmp_path / "s.sqlite"), "--checkpoint-dir", str(tmp_path / "ckpt")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("40 examples cannot give 10 clients at least 5 each"), err
    assert not (tmp_path / "s.sqlite").exists()


def test_fedrp_task_init_writes_a_draft_beside_the_file_and_keeps_an_existing_one(tmp_path, capsys):
    from fedrp.cli import main

    (tmp_path / "reviews.csv").write_text("review,stars\n" + "".join(f"text {i},{('poor', 'good')[i % 2]}\n"
                                                                      for i in range(10)))
    assert main(["task", "init", str(tmp_path / "reviews.csv")]) == 0
    assert load_task(tmp_path / "reviews.toml").label_names == ("good", "poor")
    (tmp_path / "reviews.toml").write_text("mine")
    capsys.readouterr()
    assert main(["task", "init", str(tmp_path / "reviews.csv")]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err and (tmp_path / "reviews.toml").read_text() == "mine"


@pytest.mark.slow
def test_sst2_as_a_csv_federates_to_the_built_in_tasks_numbers(tmp_path, glue_dir):
    """Two rounds over three clients, same seeds: the same server metrics round by round, and the same label
    prior, whether SST-2 comes as GLUE's TSV or as a CSV of the user's with renamed columns and string labels."""
    import csv

    from tests.test_federation import simulate

    for split in ("train", "dev"):
        ds = glue.load_split("sst2", split, glue_dir)
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["review", "sentiment"],
                                     *([t, SST2[label]] for t, label in zip(ds["text"], ds["label"], strict=True))])
    path = write_task(tmp_path, 'name = "reviews"\ntrain = "train.csv"\nvalidation = "dev.csv"\ntext = "review"\n'
                                'label = "sentiment"\nlabels = ["negative", "positive"]\nmetrics = ["accuracy"]\n')
    small = ("--num-server-rounds", "2", "--max-train-samples", "120", "--max-eval-samples", "100",
             "--fraction-evaluate", "0")
    mine = simulate(tmp_path / "mine", glue_dir, "--task", path, *small, supernodes=3)
    built_in = simulate(tmp_path / "built-in", glue_dir, *small, supernodes=3)
    assert [r["metrics"] for r in mine["rounds"]] == [r["metrics"] for r in built_in["rounds"]]
    assert mine["label_prior"] == built_in["label_prior"]


def test_the_same_keys_given_inline_define_the_same_task(tmp_path, monkeypatch, capsys):
    """`--task "train=... text=... label=... labels=a,b"` in any command (and the run config's `task`): the same
    task as its TOML file, its data paths made absolute, so another process reads the same files."""
    from fedrp.cli import main
    from fedrp.tasks import canonical_inline

    toml = write_task(tmp_path, REVIEWS + 'labels = ["poor", "good"]\n', {"train.csv": GOOD, "dev.csv": GOOD})
    monkeypatch.chdir(tmp_path)
    inline = "name=reviews train=train.csv validation=dev.csv text=review label=stars labels=poor,good"
    mine, theirs = glue.get_task(inline), glue.get_task(toml)
    assert (mine.name, mine.label_names, mine.metrics) == (theirs.name, theirs.label_names, theirs.metrics)
    assert list(glue.load_split(inline, "train")["label"]) == list(glue.load_split(toml, "train")["label"]) == [1, 0]
    assert f"train={tmp_path / 'train.csv'}" in canonical_inline(inline)
    assert main(["train", "--task", "train=train.csv text=review label=stars labels=poor,poor"]) == 2
    assert "label 'poor' is listed twice" in capsys.readouterr().err
    assert main(["train", "--task", "train=train.csv text label=stars"]) == 2
    assert "'text' is not KEY=VALUE" in capsys.readouterr().err
    assert main(["train", "--task", "train=train.csv,validation=dev.csv text=review label=stars"]) == 2
    assert "separate KEY=VALUE pairs with spaces" in capsys.readouterr().err
