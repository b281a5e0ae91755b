"""The cache every sweep shares: keys by settings and code version, resumable JSON lines."""

import json

import pytest

from simulations.harness.cells import CellCache, cell_key
from simulations.harness.code_version import code_version


def test_a_key_holds_the_settings_and_the_code_version_but_not_the_paths():
    a = cell_key("federated", {"task": "sst2", "lr": 0.3, "store": "/tmp/a.sqlite", "data-dir": "/x"})
    b = cell_key("federated", {"lr": 0.3, "task": "sst2", "store": "/elsewhere.sqlite", "data-dir": "/y"})
    assert a == b  # order and paths do not matter
    assert json.loads(a) == {"code": code_version("federated"), "task": "sst2", "lr": 0.3}
    assert cell_key("federated", {"task": "sst2", "lr": 0.1}) != a
    assert json.loads(cell_key("reference", {"task": "sst2"}))["code"] == code_version("reference")


def test_the_cache_resumes_from_its_file_and_a_later_line_wins(tmp_path):
    path = tmp_path / "sub" / "cells.jsonl"
    cache = CellCache(path)
    assert "k" not in cache and cache.get("k") is None
    cache.put("k", {"status": "failed"})
    cache.put("j", {"status": "completed"})
    cache.put("k", {"status": "completed", "x": 1})  # a retried failure
    again = CellCache(path)
    assert again.get("k") == {"status": "completed", "x": 1} and again.get("j") == {"status": "completed"}
    assert len(path.read_text().splitlines()) == 3  # appended, never rewritten


def test_a_damaged_cache_line_is_named_not_skipped(tmp_path):
    path = tmp_path / "cells.jsonl"
    path.write_text('{"key": "k", "cell": {}}\n{"key": "j", "cel\n')
    with pytest.raises(ValueError, match=r"cells.jsonl:2: expected a JSON object with key and cell"):
        CellCache(path)


def test_condensed_bytes_per_client_count_the_accepted_replies_only(tmp_path):
    """A refused reply's bytes arrived but were not averaged: the head's 3,080 B, not (2 x 3,080 + 9,000) / 2."""
    from server.rounds import summary
    from server.store import RunStore
    from simulations.harness.cells import condense

    store = RunStore(tmp_path / "runs.sqlite")
    run = store.start_run("sst2", "head", "backbone", {}, None, None, 1)
    store.add_round(run, 0, {"accuracy": 0.5})
    replies = [{"partition_id": p, "bytes": 3080, "status": "accepted"} for p in (0, 1)]
    replies.append({"partition_id": 2, "bytes": 9000, "status": "refused", "reason": "norm-outlier"})
    store.add_replies(run, 1, "train", replies)
    store.add_replies(run, 1, "evaluate", [{"partition_id": 0, "bytes": 50, "status": "accepted"}])
    store.add_round(run, 1, {"accuracy": 0.6}, bytes_up=2 * 3080 + 9000, accepted=2, refused=1)
    store.end_run(run, "completed")
    cell = condense({}, summary(store, run))
    assert cell["bytes_up_per_client"] == [3080.0] and cell["refused"] == 1
