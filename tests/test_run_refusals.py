"""`python -m simulations.run` refuses bad input in one line with exit status 2, before Ray or a model load."""

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    (["--frozen-head", "etf", "--dp-epsilon", "8", "--dp-z-share", "0.5"], "frozen-head etf leaves the head no share"),
    (["--method", "jrwarp", "--lora-rank", "4"], "lora-rank is an option of method lora; method jrwarp would ignore"),
    (["--max-length", "0"], "max-length must be an integer of at least 8, got 0"),
    (["--local-epochs", "0"], "local-epochs must be a positive number"),
    (["--batch-size", "-1"], "batch-size must be an integer of at least 0, got -1"),
    (["--lr", "nan"], "lr must be positive"),
    (["--lr", "-1"], "lr must be positive"),
    (["--data-dir", "/nonexistent"], "no GLUE file at /nonexistent"),
    (["--resume-from", "/nonexistent"], "no checkpoint at /nonexistent"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
    (["--min-train-nodes", "11"], "min-train-nodes 11 is more than the 10 clients a round can sample"),
    (["--max-length", "513"], "max-length 513 is more than the backbone takes: its 512 position embeddings"),
    (["--dashboard-port", "70000"], "port must be between 1 and 65535, got 70000"),
    (["--checkpoint-dir", "{tmp}/a-file/ckpt"], "a-file is a file: expected a folder to write checkpoints into"),
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
    (tmp_path / "a-file").write_text("")
    line = _refused(capsys, base + [a.replace("{tmp}", str(tmp_path)) for a in args])
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


def test_a_read_only_store_or_one_in_a_file_is_refused_and_left_alone(tmp_path, glue_dir, capsys):
    """Checked before Ray starts, not at the first write; and no -wal or -shm file appears beside it."""
    from server.store import RunStore

    store = tmp_path / "runs.sqlite"
    RunStore(store).close()
    store.chmod(0o444)
    before = sorted(p.name for p in tmp_path.iterdir()), store.read_bytes()
    line = _refused(capsys, ["--data-dir", str(glue_dir), "--store", str(store)])
    assert f"store {store} is read-only" in line
    assert (sorted(p.name for p in tmp_path.iterdir()), store.read_bytes()) == before
    (tmp_path / "a-file").write_text("")
    line = _refused(capsys, ["--data-dir", str(glue_dir), "--store", str(tmp_path / "a-file" / "runs.sqlite")])
    assert "a-file is a file: expected a folder to write the run store" in line


def test_resume_from_an_adapter_is_refused_before_ray(tmp_path, glue_dir, capsys):
    from safetensors.numpy import save_file

    adapter = tmp_path / "sst2-slash.safetensors"  # what `fedrp train` writes: fedrp metadata, no checkpoint
    save_file({"z": np.zeros(4, np.float32)}, str(adapter), metadata={"fedrp": "{}"})
    line = _refused(capsys, ["--data-dir", str(glue_dir), "--store", str(tmp_path / "s.sqlite"),
                             "--resume-from", str(adapter)])
    assert f"resume-from {adapter} is a fedrp adapter, not a checkpoint" in line
    other = tmp_path / "weights.safetensors"
    save_file({"w": np.zeros(4, np.float32)}, str(other))
    line = _refused(capsys, ["--data-dir", str(glue_dir), "--resume-from", str(other)])
    assert "is another program's safetensors file, not a checkpoint" in line
    torn = tmp_path / "round-0003.safetensors"
    torn.write_bytes(b"\x10\x00")
    assert "is not a safetensors file" in _refused(capsys, ["--data-dir", str(glue_dir), "--resume-from", str(torn)])


def test_a_dashboard_port_in_use_is_refused_before_ray(tmp_path, glue_dir, capsys):
    """Not a run that goes on while its log names another program's address."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        line = _refused(capsys, ["--data-dir", str(glue_dir), "--store", str(tmp_path / "s.sqlite"),
                                 "--dashboard-port", str(port)])
    assert f"port {port} on 127.0.0.1 is in use; expected a free port" in line


def test_offline_without_a_glue_folder_is_one_line(tmp_path):
    """No --data-dir, no $FEDRP_GLUE_DIR and no Hub: what to pass, not datasets' ConnectionError traceback."""
    env = {k: v for k, v in os.environ.items() if k != "FEDRP_GLUE_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "hf"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    res = subprocess.run([sys.executable, "-m", "simulations.run", "--engine", "inprocess", "--store",
                          str(tmp_path / "s.sqlite")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no GLUE folder was given and the Hub cannot be reached" in lines[0], res.stderr[-2000:]
    assert "expected --data-dir (data-dir) or $FEDRP_GLUE_DIR" in lines[0]
    assert not (tmp_path / "s.sqlite").exists()
