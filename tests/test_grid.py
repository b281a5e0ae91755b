"""The GLUE grid runner and its results page: config, cells, the resumable cache, QNLI's split.

No model runs here: the sweep gets a fake cell runner, and the results page reads a synthetic
cache (its numbers are made up for the test and never written outside tmp_path).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fedrp import glue
from simulations import results_page
from simulations.grid import (
    cell_key,
    cells,
    error_line,
    held_out_indices,
    load_config,
    parse_only,
    prune_checkpoints,
    read_rows,
    select,
    split_qnli,
    sweep,
    task_label,
)

CONFIG = Path(__file__).resolve().parents[1] / "simulations" / "grid.toml"

SMALL = """
[grid]
tasks = ["mrpc", "stsb"]
alphas = [0.1, 1]
methods = ["slash", "full"]
cache = "{cache}"
estimate = "a test"

[federated]
num-supernodes = 4
num-server-rounds = 3
max-train-samples = 200
max-eval-samples = 100

[reference]
epochs = 2
"""


def small_config(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text.replace("{cache}", str(tmp_path / "cells.jsonl")))
    return path


def test_full_config_has_114_distinct_cells(glue_dir):
    grid = load_config(CONFIG, str(glue_dir))
    every = cells(grid)
    assert len(every) == 114 and len({cell_key(c) for c in every}) == 114
    assert Counter(c["kind"] for c in every) == {"federated": 108, "reference": 6}
    assert grid.federated["lr"] == 0.0 and grid.federated["num-supernodes"] == 10  # 0: each method's federated rate
    ref = next(c for c in every if c["kind"] == "reference" and c["task"] == "rte")
    assert ref["options"]["max-train-samples"] == grid.federated["max-train-samples"]  # the same training subset
    assert task_label(grid, "qnli") == "QNLI (dev split: 4463 train / 1000 held out)"
    qnli = [c for c in every if c["task"] == "qnli"]
    assert {c["data"] for c in qnli} == {"qnli-dev-split:held-out=1000,seed=0"}


@pytest.mark.parametrize("old, new, message", [
    ('tasks = ["mrpc", "stsb"]', 'tasks = ["mrpc", "qqq"]', "unknown GLUE task 'qqq'"),
    ('methods = ["slash", "full"]', 'methods = ["slash", "prefix"]', "unknown method 'prefix'"),
    ("alphas = [0.1, 1]", "alphas = [0.1, -1]", "-1 is not a positive number"),
    ("num-server-rounds = 3", "num-server-rounds = 3\nrounds = 3", "unknown run-config key 'rounds'"),
    ("num-server-rounds = 3", 'num-server-rounds = 3\ntask = "rte"', "'task' is set per cell"),
    ("epochs = 2", "epochs = 2\nlearning-rate = 1", "[reference]: unknown key 'learning-rate'"),
    ("[grid]", "[grids]\n[grid]", "section 'grids' is unknown"),
])
def test_config_refuses_unknown_values_by_name(tmp_path, old, new, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(small_config(tmp_path, SMALL.replace(old, new)))


def test_only_selects_cells_and_refuses_values_outside_the_grid(glue_dir):
    grid = load_config(CONFIG, str(glue_dir))
    picked = select(cells(grid), parse_only(["task=RTE,method=slash,alpha=1"], grid))
    assert [(c["kind"], c["method"], c["alpha"]) for c in picked] == [("reference", "full", None),
                                                                     ("federated", "slash", 1.0)]
    assert len(select(cells(grid), parse_only(["kind=federated,task=rte,task=mrpc"], grid))) == 36
    for spec, message in [("alpha=0.5", "not among the grid's alpha values"), ("task=qqq", "unknown GLUE task"),
                          ("method=prefix", "not among the grid's method values"), ("round=3", "expected FIELD=VALUE")]:
        with pytest.raises(ValueError, match=message):
            parse_only([spec], grid)


def test_sweep_resumes_skips_cached_and_keeps_failures(tmp_path):
    grid = load_config(small_config(tmp_path))
    todo, cache, calls, stop_at = cells(grid), tmp_path / "cells.jsonl", [], [4]

    def runner(cell):
        calls.append(cell_key(cell))
        if len(calls) in stop_at:
            raise KeyboardInterrupt  # the sweep is stopped mid-way
        if cell["method"] == "full" and cell["kind"] == "federated" and cell["alpha"] == 0.1:
            raise RuntimeError("Traceback ...\nValueError: out of memory")
        return {"status": "completed", "final_metrics": {"accuracy": 0.5}}

    with pytest.raises(KeyboardInterrupt):
        sweep(todo, cache, runner)
    assert len(cache.read_text().splitlines()) == 3  # the interrupted cell is not recorded
    stop_at.clear()
    calls.clear()
    rows = sweep(todo, cache, runner, record={"command": "python -m simulations.grid"})
    assert len(calls) == len(todo) - 3 and len(rows) == len(todo)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and {r["error"] for r in failed} == {"ValueError: out of memory"}
    calls.clear()
    assert sweep(todo, cache, runner) == rows and calls == []  # nothing runs twice, failures included
    sweep(todo, cache, runner, retry_failed=True)
    assert len(calls) == 2


def test_qnli_split_is_disjoint_deterministic_and_keeps_label_balance(tmp_path, glue_dir):
    source = glue_dir / "QNLI" / "dev.tsv"
    assert split_qnli(source, tmp_path / "a", 1000, 0) == (4463, 1000)
    train_file = tmp_path / "a" / "QNLI" / "train.tsv"
    stamp = train_file.stat().st_mtime_ns
    assert split_qnli(source, tmp_path / "a", 1000, 0) == (4463, 1000)
    assert train_file.stat().st_mtime_ns == stamp  # unchanged files are not rewritten (tokenization cache)
    split_qnli(source, tmp_path / "b", 1000, 0)
    split_qnli(source, tmp_path / "c", 1000, 1)
    read = {name: {s: (tmp_path / name / "QNLI" / f"{s}.tsv").read_bytes() for s in ("train", "dev")} for name in "abc"}
    assert read["a"] == read["b"] and read["a"]["dev"] != read["c"]["dev"]
    rows = read_rows(source)[1:]
    train, dev = (read_rows(tmp_path / "a" / "QNLI" / f"{s}.tsv")[1:] for s in ("train", "dev"))
    ids = {s: {r[0] for r in part} for s, part in (("train", train), ("dev", dev))}
    assert not ids["train"] & ids["dev"] and ids["train"] | ids["dev"] == {r[0] for r in rows}
    share = {name: Counter(r[-1] for r in part)["entailment"] / len(part) for name, part in
             (("all", rows), ("train", train), ("dev", dev))}
    assert abs(share["dev"] - share["all"]) < 0.002 and abs(share["train"] - share["all"]) < 0.002
    assert len(glue.load_split("qnli", "train", tmp_path / "a")) == 4463  # an official layout fedrp reads
    with pytest.raises(ValueError, match="cannot hold out"):
        held_out_indices(["a", "b"], 2, 0)


def test_results_page_marks_not_run_and_failed_cells_and_draws_plots(tmp_path, glue_dir):
    grid = load_config(small_config(tmp_path), str(glue_dir))
    fed = [c for c in cells(grid) if c["kind"] == "federated"]
    metrics = {"mrpc": lambda x: {"f1": x, "accuracy": x - 0.1},
               "stsb": lambda x: {"pearson": x, "spearmanr": x - 0.01}}

    def synthetic(cell):  # made-up numbers shaped like grid's rows, for the page's logic only
        if cell["method"] == "full" and cell["task"] == "stsb":
            raise RuntimeError("Traceback\nRuntimeError: synthetic failure")
        size = 7176 if cell["method"] == "slash" else 90_000_000
        return {"status": "completed", "initial_metrics": metrics[cell["task"]](0.3),
                "metrics": [metrics[cell["task"]](0.5 + 0.1 * i) for i in range(3)],
                "final_metrics": metrics[cell["task"]](0.7), "bytes_up_per_client": [size] * 3,
                "bytes_up_total": [2 * size] * 3, "params": size // 4}

    ref = next(c for c in cells(grid) if c["kind"] == "reference" and c["task"] == "mrpc")
    todo = [ref, *(c for c in fed if c["alpha"] == 0.1)]
    sweep(todo, tmp_path / "cells.jsonl", lambda c: {"seconds": 1, **synthetic(c)},
          record={"command": "python -m simulations.grid --only alpha=0.1"})
    out = tmp_path / "docs" / "RESULTS.md"
    results_page.main(["--config", str(grid.config), "--out", str(out), "--figures", str(tmp_path / "docs" / "results"),
                       "--data-dir", str(glue_dir)])
    text = out.read_text()
    slash_row = next(line for line in text.splitlines() if line.startswith("| slash | 0.1 |"))
    assert "| 70.0/60.0 | 70.0/69.0 | 1,794 | 7.0 KiB |" in slash_row
    assert "| full | 0.1 | 70.0/60.0 | failed [1] |" in text and "RuntimeError: synthetic failure" in text
    assert text.count("not run: time") == 2 * 2 + 1  # alpha 1.0 for both methods and tasks; STS-B's reference
    assert "python -m simulations.grid --only alpha=0.1" in text and "MRPC 200 of 3,668" in text and "MRPC 100 of 408" in text
    figure = tmp_path / "docs" / "results" / "mrpc.png"
    assert figure.read_bytes()[:4] == b"\x89PNG" and "![MRPC](results/mrpc.png)" in text
    assert (tmp_path / "docs" / "results" / "stsb.png").is_file()
    assert json.loads((tmp_path / "cells.jsonl").read_text().splitlines()[0])["cell"]["kind"] == "reference"


def test_a_failed_cell_keeps_its_errors_last_line_and_finished_runs_keep_one_checkpoint(tmp_path):
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nValueError: no GLUE file at /x\nINFO shutting down\n"
    assert error_line(log) == "ValueError: no GLUE file at /x"
    assert error_line("just text\n\n") == "just text" and error_line("") == "(no output)"
    for rnd in (1, 2, 10):
        (tmp_path / f"round-{rnd:04d}.safetensors").write_bytes(b"x")
    prune_checkpoints(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["round-0010.safetensors"]
