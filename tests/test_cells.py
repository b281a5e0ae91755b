"""The cache every sweep shares: keys by settings and code version, resumable JSON lines."""

import json

import pytest

from simulations.cells import CellCache, cell_key
from simulations.code_version import code_version


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
