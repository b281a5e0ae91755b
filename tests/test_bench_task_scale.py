"""The task-scale benchmark at tiny sizes: one JSON object of the promised shape, a warm run that reads the
tokenized cache instead of tokenizing again, and an edited file that is tokenized again."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.bench_task_scale import EDITED_AGAIN, FIRST, LABELS, edit_first_row, write_task

ROOT = Path(__file__).resolve().parents[1]
ROWS = (200, 2000)

# The benchmark's runs share one module fixture: under `pytest -n N` its tests stay on one worker (conftest.py).


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    scratch = tmp_path_factory.mktemp("task-scale")
    res = subprocess.run([sys.executable, "-m", "simulations.bench_task_scale", "--rows", *map(str, ROWS),
                          "--validation-rows", "50", f"--scratch={scratch}"],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)  # one JSON object, nothing else on stdout


def test_synthetic_task_files(tmp_path):
    """The CSV has the header, the rows asked for, labels among LABELS; an edit keeps size and (asked) mtime."""
    task = write_task(tmp_path, rows=120, validation_rows=7, seed=0)
    with open(tmp_path / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and (rows[0]["utterance"], rows[0]["intent"]) == FIRST
    assert {r["intent"] for r in rows} <= set(LABELS) and all(3 <= len(r["utterance"].split()) <= 14 for r in rows[1:])
    assert (tmp_path / "dev.csv").read_text(encoding="utf-8").count("\n") == 8
    assert 'train = "train.csv"' in task.read_text()
    before = (tmp_path / "train.csv").stat()
    edit_first_row(tmp_path / "train.csv", EDITED_AGAIN, keep_mtime=True)
    after = (tmp_path / "train.csv").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (tmp_path / "train.csv").read_text().splitlines()[1] == ",".join(EDITED_AGAIN)


@pytest.mark.slow
def test_json_shape(result):
    assert result["rows"] == list(ROWS)
    assert {"cpu_count", "cpu_model", "load_average_at_start", "omp_num_threads"} <= set(result["machine"])
    assert {"torch", "transformers", "datasets", "pyarrow", "tokenizers"} <= set(result["versions"])
    assert [s["rows"] for s in result["sizes"]] == list(ROWS)
    for size in result["sizes"]:
        for kind in ("cold", "warm"):
            run = size[kind]
            assert run["train_rows"] == size["rows"], kind
            assert run["seconds_to_first_step"] > run["imports_seconds"] > 0
            assert 0 < run["peak_rss_anon_mb"] <= run["peak_rss_mb"]
            assert run["ru_maxrss_mb"] >= run["peak_rss_mb"] - 1  # os.wait4's peak is at least the one read inside
            assert isinstance(run["torch_threads"], int) and run["torch_threads"] >= 1
            assert run["phases"][-1]["phase"] == "train until the first step" and run["phases"][-1]["seconds"] >= 0
            assert run["cache_bytes"]["fedrp_tokens"] > 0
    targets = result["targets"]
    assert len(targets) == 3 and all(isinstance(t["met"], bool) for t in targets)
    assert [("cold" in t["target"], "warm" in t["target"]) for t in targets] == [(True, False), (False, True),
                                                                                (False, True)]


@pytest.mark.slow
def test_warm_run_reads_the_tokenized_cache(result):
    """The second process tokenizes nothing and writes no new tokenized cache: it reads the first one's."""
    for size in result["sizes"]:
        cold, warm = size["cold"], size["warm"]
        assert cold["tokenized"] and cold["cache_bytes_written"]["fedrp_tokens"] > 0, size["rows"]
        assert not warm["tokenized"] and warm["cache_bytes_written"]["fedrp_tokens"] == 0, size["rows"]
        assert warm["token_caches"] == cold["token_caches"] and len(cold["token_caches"]) == 1
        assert warm["first_row"] == cold["first_row"] == {"text": FIRST[0], "label": LABELS.index(FIRST[1])}
        assert size["warm_read_the_cache"]


@pytest.mark.slow
def test_an_edited_file_is_tokenized_again(result):
    """Row 0 rewritten with the same bytes in another order and another label: a new cache entry, and training
    starts from the edited row (a cache keyed by anything but the content would serve the old tokens)."""
    edited = result["cache_follows_content"]["edited"]
    assert edited["tokenized"] and len(edited["token_caches"]) == 2
    assert edited["first_row"] == edited["expected_first_row"]
    assert edited["met"]


@pytest.mark.slow
def test_an_edit_that_keeps_size_and_mtime_is_read(result):
    same = result["cache_follows_content"]["edited_same_size_and_mtime"]
    assert same["tokenized"]
    assert same["first_row"] == same["expected_first_row"]

