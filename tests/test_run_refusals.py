"""`python -m simulations.run` refuses bad input in one line with exit status 2, before Ray or a model load."""

import sqlite3
import time

import pytest

from simulations.run import main

BAD = [
    (["--task", "foo"], "unknown GLUE task 'foo'"),
    (["--method", "foo"], "method must be one of"),
    (["--aggregation", "foo"], "aggregation must be one of"),
    (["--faulty-clients", "0:foo"], "faulty-clients entry '0:foo'"),
    (["--fraction-train", "0"], "fraction-train must be in (0, 1]"),
    (["--fraction-train", "2"], "fraction-train must be in (0, 1]"),
    (["--num-server-rounds", "0"], "num-server-rounds must be an integer of at least 1, got 0"),
    (["--num-supernodes", "0"], "num-supernodes must be at least 1, got 0"),
    (["--alpha", "0"], "alpha must be a positive number"),
    (["--alpha", "-1"], "alpha must be a positive number"),
    (["--d", "0"], "d must be an integer of at least 1, got 0"),
    (["--max-length", "0"], "max-length must be an integer of at least 8, got 0"),
    (["--local-epochs", "0"], "local-epochs must be a positive number"),
    (["--batch-size", "-1"], "batch-size must be an integer of at least 0, got -1"),
    (["--lr", "nan"], "lr must be positive"),
    (["--lr", "-1"], "lr must be positive"),
    (["--data-dir", "/nonexistent"], "no GLUE file at /nonexistent"),
    (["--resume-from", "/nonexistent"], "no checkpoint at /nonexistent"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
]


def _refused(capsys, argv: list[str]) -> str:
    import datasets

    # As in a fresh `python -m simulations.run`, which turns them off before datasets is imported;
    # here other tests imported it first.
    datasets.disable_progress_bars()
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert time.perf_counter() - start < 20  # refused before Ray or a backbone load
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, glue_dir, capsys, args, message):
    base = ["--engine", "inprocess", "--data-dir", str(glue_dir), "--store", str(tmp_path / "s.sqlite"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--max-train-samples", "100"]
    line = _refused(capsys, base + args)
    assert line.startswith("simulations.run: error: ") and message in line
    assert not (tmp_path / "s.sqlite").exists()  # nothing was started, so nothing was written


def test_a_foreign_store_is_refused_and_left_alone(tmp_path, glue_dir, capsys):
    store = tmp_path / "app.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    before = store.read_bytes()
    line = _refused(capsys, ["--data-dir", str(glue_dir), "--store", str(store)])
    assert "is not a fedrp run store: it has no 'fedrp-run-store' mark" in line
    assert store.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["app.sqlite"]
