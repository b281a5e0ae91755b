"""The label-skew comparison's page: each remedy named by what it changes, scored as tune scores it, against
FedAvg at the same code version only."""

import json

import pytest

from simulations.harness import label_skew_page

COMMON = {"task": "qnli", "method": "slash", "alpha": "0.1", "lr": "0.3"}


def _row(code: str, accuracies: list[float], **own) -> str:
    settings = {**COMMON, **own}
    metrics = [{} for _ in range(4)]
    for a in accuracies:
        metrics += [{"accuracy": a}, {}]
    cell = {"settings": settings, "status": "completed", "metrics": metrics, "bytes_up_per_client": [7176.0] * 3,
            "wall_seconds": [1800.0, 1800.0]}
    return json.dumps({"key": json.dumps({**settings, "code": code}), "cell": cell})


def test_each_remedy_is_scored_against_fedavg_of_its_own_code(tmp_path):
    cache = tmp_path / "skew.jsonl"
    cache.write_text("\n".join([
        _row("aaaa", [0.50, 0.54, 0.55, 0.56], aggregation="fedavg"),
        _row("aaaa", [0.50, 0.57, 0.58, 0.59], aggregation="scaffold"),
        _row("aaaa", [0.50, 0.50, 0.51, 0.52], aggregation="fedprox", **{"proximal-mu": "0.1"}),
        _row("bbbb", [0.70, 0.70, 0.70, 0.70], aggregation="feddyn"),  # no FedAvg row of its code
        _row("aaaa", [0.50, 0.60, 0.60, 0.60], aggregation="scaffold", lr="0.1"),  # one row at another rate
    ]) + "\n")
    page = label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")])
    assert (tmp_path / "page.md").read_text() == page
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in page.splitlines()
             if line.startswith("| ") and "---" not in line and "remedy" not in line}
    assert lines["aggregation=scaffold"][1:3] == ["0.580", "+3.0"]  # (0.57+0.58+0.59)/3 against 0.55
    assert lines["aggregation=fedprox, proximal-mu=0.1"][1:3] == ["0.510", "-4.0"]
    assert lines["fedavg"][1:3] == ["0.550", ""]
    assert lines["aggregation=feddyn"][2] == ""  # another code version: not compared
    assert lines["aggregation=scaffold, lr=0.1"][1:3] == ["0.600", "+5.0"]  # the others keep their names
    assert lines["aggregation=scaffold"][4:6] == ["7,176", "1.00"]


def test_a_missing_cache_is_one_line_and_exit_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        label_skew_page.main(["--cache", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "page.md")])
    assert exit_.value.code == 2 and "is not a file: expected the comparison's JSON lines" in capsys.readouterr().err
    assert not (tmp_path / "page.md").exists()
