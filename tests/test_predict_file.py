"""`fedrp predict --input FILE` and `fedrp eval --task FILE.toml` on a task of the user's own: the labels are the
user's, a file's predictions are the ones `--text` gives, and bad input is one line before any model loads."""

from __future__ import annotations

import contextlib
import io
import json
from contextlib import nullcontext
from pathlib import Path

import datasets
import pytest

from fedrp.cli import main
from tests.test_cli import _unwritable, fedrp

TEXTS = ["a great film, and \"moving\"", "dull", "NA", "12", "naïve, boring plot"]  # quotes, commas, look-alikes
TRAIN = ["great film", "loved it", "wonderful acting", "dull", "boring plot", "a waste of time"]
TASK = 'name = "reviews"\ntrain = "train.csv"\nvalidation = "dev.csv"\ntext = "review"\nlabel = "stars"\n'


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A CSV written through datasets, as a user's tools would (quoting where a field needs it)."""
    datasets.Dataset.from_dict({h: [r[i] for r in rows] for i, h in enumerate(header)}).to_csv(str(path), index=False)
    return path


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    """A task of the user's own: reviews labelled bad or good, in CSV files beside its TOML file."""
    folder = tmp_path_factory.mktemp("reviews")
    rows = [[f"{t} {i}", "good" if j < 3 else "bad"] for i in range(4) for j, t in enumerate(TRAIN)]
    write_csv(folder / "train.csv", ["review", "stars"], rows)
    write_csv(folder / "dev.csv", ["review", "stars"], rows[:8])
    (folder / "task.toml").write_text(TASK + 'labels = ["bad", "good"]\n')
    (folder / "swapped.toml").write_text(TASK + 'labels = ["good", "bad"]\n')
    (folder / "scores.toml").write_text(TASK + 'kind = "regression"\n')
    return folder / "task.toml"


@pytest.fixture(scope="module")
def trained(task) -> tuple[Path, dict]:
    """`fedrp train --task task.toml`: its adapter, and what it printed (one step on 24 examples: a second)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--task", str(task), "--method", "slash", "--d", "64", "--out", str(task.parent / "runs"),
                     "--bf16", "off", "--json"]) == 0
    return task.parent / "runs" / "reviews-slash.safetensors", json.loads(out.getvalue())


@pytest.fixture(scope="module")
def adapter(trained) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def others(tmp_path_factory, task) -> dict[str, Path]:
    """Adapters of other kinds: `fedrp init` ones that record no task definition (a regression head and a GLUE
    pair task, named only), and a regression one of the user's task, with its definition."""
    from fedrp import artifact
    from fedrp.adapters import build_model, make_config
    from fedrp.backbone import load_backbone
    from fedrp.tasks import load_task

    folder = tmp_path_factory.mktemp("others")
    paths = {"plain": folder / "plain.safetensors", "mrpc": folder / "mrpc.safetensors",
             "scores": folder / "scores.safetensors"}
    assert main(["init", "--method", "slash", "--d", "64", "--labels", "score", "--out", str(paths["plain"])]) == 0
    assert main(["init", "--method", "jrwarp", "--d", "64", "--labels", "not_equivalent", "equivalent", "--task", "mrpc",
                 "--out", str(paths["mrpc"])]) == 0
    model = build_model(load_backbone(), make_config("slash", d=64, num_labels=1))
    artifact.save(artifact.from_model(model, task=load_task(task.parent / "scores.toml")), paths["scores"])
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Input files: a good one in every format, and one broken in each way bad input is refused."""
    folder = tmp_path_factory.mktemp("inputs")
    ids = [f"r{i}" for i in range(len(TEXTS))]
    ds = datasets.Dataset.from_dict({"id": ids, "review": TEXTS, "stars": ["good"] * len(TEXTS)})
    ds.to_csv(str(folder / "good.csv"), index=False)
    ds.to_csv(str(folder / "good.tsv"), index=False, sep="\t")
    ds.to_json(str(folder / "good.jsonl"), lines=True)
    ds.to_parquet(str(folder / "good.parquet"))
    (folder / "notes.txt").write_text("review\ngood film\n")
    (folder / "empty.csv").write_text("")
    (folder / "header.csv").write_text("id,review\n")
    (folder / "latin1.csv").write_bytes("id,review\nr1,fine\nr2,café\n".encode("latin-1"))
    (folder / "other.csv").write_text("id,body\nr1,fine\n")
    (folder / "blank.csv").write_text("id,review\nr1,fine\nr2,\n")
    (folder / "nulls.jsonl").write_text('{"id": "r1", "review": null}\n')
    (folder / "nothing.jsonl").write_text("\n")
    (folder / "list.json").write_text("[]\n")
    ds.select([]).to_parquet(str(folder / "none.parquet"))
    (folder / "cut.parquet").write_bytes((folder / "good.parquet").read_bytes()[:-20])
    write_csv(folder / "pairs.csv", ["sentence1", "sentence2", "other"], [[t, "it was good", "x"] for t in TEXTS])
    return folder


def predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_csv_gets_one_line_per_row_with_the_users_labels_and_the_text_predictions(adapter, inputs, tmp_path, capsys):
    out = tmp_path / "predictions.jsonl"
    res = fedrp(capsys, "predict", "--adapter", adapter, "--input", inputs / "good.csv", "--output", out,
                "--batch-size", "2", "--json")  # batches of 2, 2 and 1
    assert json.loads(res.stdout) == {"output": str(out), "rows": len(TEXTS)}
    rows = predictions(out)
    assert [r["row"] for r in rows] == list(range(len(TEXTS))) and [r["id"] for r in rows] == [
        f"r{i}" for i in range(len(TEXTS))]
    for row, text in zip(rows, TEXTS, strict=True):
        assert row["label"] in ("bad", "good") and set(row["scores"]) == {"bad", "good"}
        assert sum(row["scores"].values()) == pytest.approx(1) and row["label"] == max(row["scores"], key=row["scores"].get)
        alone = json.loads(fedrp(capsys, "predict", "--adapter", adapter, "--text", text, "--json").stdout)
        assert alone["label"] == row["label"]
        assert alone["logits"] == pytest.approx(row["logits"], abs=1e-5)
        assert alone["scores"] == pytest.approx(row["scores"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]  # no temporary file left


def test_every_format_gives_the_csv_predictions_and_stdout_holds_only_them(adapter, inputs, capsys):
    """Without --output the lines go to stdout, with no summary, and no progress bar on a stderr that is no tty."""
    seen = {}
    for suffix in ("csv", "tsv", "jsonl", "parquet"):
        res = fedrp(capsys, "predict", "--adapter", adapter, "--input", inputs / f"good.{suffix}")
        seen[suffix] = [json.loads(line) for line in res.stdout.splitlines()]
        assert res.stderr == "" and len(seen[suffix]) == len(TEXTS), suffix
    for suffix, rows in seen.items():
        assert [(r["id"], r["label"]) for r in rows] == [(r["id"], r["label"]) for r in seen["csv"]], suffix
        for a, b in zip(rows, seen["csv"], strict=True):
            assert a["logits"] == pytest.approx(b["logits"], abs=1e-6)


def test_an_export_predicts_a_file_as_its_adapter_does(adapter, inputs, tmp_path, capsys):
    out = tmp_path / "exported"
    fedrp(capsys, "export", "--adapter", adapter, "--out", out)
    a = fedrp(capsys, "predict", "--adapter", adapter, "--input", inputs / "good.jsonl").stdout.splitlines()
    b = fedrp(capsys, "predict", "--exported", out, "--input", inputs / "good.jsonl").stdout.splitlines()
    for x, y in zip(map(json.loads, a), map(json.loads, b), strict=True):
        assert (x["row"], x["id"], x["label"]) == (y["row"], y["id"], y["label"])
        assert x["logits"] == pytest.approx(y["logits"], abs=1e-5)


def test_a_pair_task_reads_both_columns_and_an_unnamed_task_the_given_one(others, inputs, tmp_path, capsys):
    """An adapter that names only its GLUE task (written before definitions were recorded) reads GLUE's columns;
    one that names none reads --text-column, and its single output is a score."""
    rows = [json.loads(line) for line in fedrp(capsys, "predict", "--adapter", others["mrpc"], "--input",
                                                inputs / "pairs.csv").stdout.splitlines()]
    alone = json.loads(fedrp(capsys, "predict", "--adapter", others["mrpc"], "--text", TEXTS[1], "--text-pair",
                             "it was good", "--json").stdout)
    assert rows[1]["label"] == alone["label"] and rows[1]["logits"] == pytest.approx(alone["logits"], abs=1e-5)
    assert set(rows[1]["scores"]) == {"not_equivalent", "equivalent"} and "id" not in rows[1]
    swapped = [json.loads(line) for line in fedrp(capsys, "predict", "--adapter", others["mrpc"], "--input",
                                                   inputs / "pairs.csv", "--text-column", "sentence2", "--pair-column",
                                                   "sentence1").stdout.splitlines()]
    assert swapped[1]["logits"] != pytest.approx(rows[1]["logits"], abs=1e-6)  # the options were read
    scores = [json.loads(line) for line in fedrp(capsys, "predict", "--adapter", others["plain"], "--input",
                                                  inputs / "good.csv", "--text-column", "review").stdout.splitlines()]
    alone = json.loads(fedrp(capsys, "predict", "--adapter", others["plain"], "--text", TEXTS[0], "--json").stdout)
    assert isinstance(scores[0]["label"], float) and "scores" not in scores[0]
    assert scores[0]["label"] == pytest.approx(alone["label"], abs=1e-5)


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("stop", ["error", "ctrl-c"])
def test_a_failure_or_ctrl_c_midway_leaves_no_partial_output(adapter, inputs, tmp_path, capsys, monkeypatch, existing,
                                                             stop):
    """The lines go to a temporary file renamed into place at the end: an earlier file stays whole, and a new one
    is not there at all. Ctrl-C is one line and exit status 130, not a traceback."""
    from fedrp import predict

    out = tmp_path / "predictions.jsonl"
    if existing:
        out.write_text("earlier\n")
    calls, real = [], predict.predict

    def stopped_in_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory") if stop == "error" else KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict", stopped_in_the_second_batch)
    argv = ["predict", "--adapter", str(adapter), "--input", str(inputs / "good.csv"), "--output", str(out),
            "--batch-size", "2"]
    if stop == "error":
        with pytest.raises(RuntimeError, match="out of memory"):
            main(argv)
    else:
        try:
            assert main(argv) == 130
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped fedrp's main as a traceback")
        assert capsys.readouterr().err.strip().splitlines()[-1] == "fedrp predict: interrupted"
    assert len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == (["predictions.jsonl"] if existing else [])
    assert not existing or out.read_text() == "earlier\n"


def test_eval_takes_the_users_task_file(trained, task, capsys):
    path, printed = trained
    res = json.loads(fedrp(capsys, "eval", "--adapter", path, "--task", task, "--json").stdout)
    assert res["task"] == "reviews" and res["eval_examples"] == 8
    assert res["metrics"] == pytest.approx(printed["metrics"], abs=1e-6)


PREDICT = ["predict", "--adapter", "{adapter}"]
REFUSED = [
    ([*PREDICT, "--input", "{tmp}/missing.csv"], "no input file at"),
    ([*PREDICT, "--input", "{inputs}/notes.txt"], "notes.txt must end in one of"),
    ([*PREDICT, "--input", "{inputs}/empty.csv"], "empty.csv is empty"),
    ([*PREDICT, "--input", "{inputs}/header.csv"], "header.csv has no examples"),
    ([*PREDICT, "--input", "{inputs}/nothing.jsonl"], "nothing.jsonl has no examples"),
    ([*PREDICT, "--input", "{inputs}/none.parquet"], "none.parquet has no rows"),
    ([*PREDICT, "--input", "{inputs}/list.json"], "list.json has no examples"),
    ([*PREDICT, "--input", "{inputs}/cut.parquet"], "cut.parquet cannot be read as parquet (Parquet magic bytes"),
    ([*PREDICT, "--input", "{inputs}/latin1.csv"], "latin1.csv line 3: byte 0xe9 is not UTF-8"),
    ([*PREDICT, "--input", "{inputs}/other.csv"], "other.csv has no column 'review': its columns are ['id', 'body']"),
    ([*PREDICT, "--input", "{inputs}/blank.csv"], "blank.csv row 2: no text in column 'review'"),
    ([*PREDICT, "--input", "{inputs}/nulls.jsonl"], "nulls.jsonl row 1: no text in column 'review'"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--text-column", "body"], "good.csv has no column 'body'"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--pair-column", "id"],
     "--pair-column given, but the adapter's task reviews classifies one sentence"),
    ([*PREDICT, "--text", "fine", "--text-pair", "x"],
     "--text-pair given, but the adapter's task reviews classifies one sentence"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--text-pair", "x"], "--text-pair goes with --text"),
    ([*PREDICT, "--text", "fine", "--output", "{tmp}/p.jsonl"], "--output goes with --input FILE, not --text"),
    ([*PREDICT, "--text", "fine", "--text-column", "review"], "--text-column goes with --input FILE"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--output", "{tmp}"], "is a folder: expected the JSON Lines file"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--output", "{inputs}/good.csv"], "is the input file"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--output", "{unwritable}/p.jsonl"], "cannot create files in"),
    ([*PREDICT, "--input", "{inputs}/good.csv", "--batch-size", "0"], "argument --batch-size: expected a positive"),
    (["predict", "--adapter", "{plain}", "--input", "{inputs}/good.csv"],
     "records no task definition to name its text column: pass --text-column"),
    (["predict", "--adapter", "{mrpc}", "--input", "{inputs}/good.csv", "--text-column", "review"],
     "good.csv has no column 'sentence2'"),
    (["predict", "--adapter", "{mrpc}", "--text", "fine"], "task mrpc classifies sentence pairs: give --text-pair"),
    (["predict", "--exported", "{exported}", "--input", "{inputs}/other.csv"], "other.csv has no column 'review'"),
    (["eval", "--adapter", "{adapter}"],
     "was trained on your task 'reviews', whose data an adapter does not hold: pass --task with its TOML file"),
    (["eval", "--adapter", "{adapter}", "--task", "{task}/swapped.toml"],
     "adapter was trained for reviews with labels ['bad', 'good']; task reviews has labels ['good', 'bad']"),
    (["eval", "--adapter", "{adapter}", "--task", "{task}/scores.toml"],
     "with labels ['bad', 'good']; task reviews has labels (a regression score)"),
    (["eval", "--adapter", "{scores}", "--task", "{task}/task.toml"],
     "adapter was trained for reviews with a regression score; task reviews has ['bad', 'good']"),
]


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory) -> Path:
    from fedrp.export import export

    return export(adapter, tmp_path_factory.mktemp("exported") / "out")


@pytest.mark.parametrize("argv, message", REFUSED, ids=[f"{i} {a[0]} {a[-1]}" for i, (a, _) in enumerate(REFUSED)])
def test_bad_input_is_one_line_and_exit_2_before_the_model_loads(adapter, others, exported, inputs, task, tmp_path,
                                                                 capsys, no_model, argv, message):
    fields = dict(adapter=adapter, plain=others["plain"], mrpc=others["mrpc"], scores=others["scores"],
                  exported=exported, inputs=inputs, task=task.parent, tmp=tmp_path, unwritable=_unwritable(tmp_path))
    before = sorted(p.name for p in inputs.iterdir())
    with pytest.raises(SystemExit) if "argument --" in message else nullcontext() as refused:  # argparse's own
        assert main([a.format(**fields) for a in argv]) == 2
    assert refused is None or refused.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in inputs.iterdir()) == before and not list(tmp_path.iterdir())  # nothing written

