"""The label-skew comparison's page: each remedy named by what it changes, scored as tune scores it, against
FedAvg at the same code version only."""

import json

import pytest

from simulations.harness import label_skew_page

COMMON = {"task": "qnli", "method": "slash", "alpha": "0.1", "lr": "0.3", "eval-every": "5"}


def _row(code: str, accuracies: list[float], **own) -> str:
    settings = {**COMMON, **own}
    metrics = [{} for _ in range(4)]
    for a in accuracies:
        metrics += [{"accuracy": a}, {}]
    cell = {"settings": settings, "status": "completed", "metrics": metrics, "bytes_up_per_client": [7176.0] * 3,
            "wall_seconds": [1800.0, 1800.0]}
    return json.dumps({"key": json.dumps({**settings, "code": code}), "cell": cell})


def _lines(page: str) -> dict[str, list[str]]:
    """The page's table lines by remedy, each split into its cells."""
    return {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in page.splitlines()
            if line.startswith("| ") and "---" not in line and "remedy" not in line}


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
    lines = _lines(page)
    assert lines["aggregation=scaffold"][1:3] == ["0.580", "+3.0"]  # (0.57+0.58+0.59)/3 against 0.55
    assert lines["aggregation=fedprox, proximal-mu=0.1"][1:3] == ["0.510", "-4.0"]
    assert lines["fedavg"][1:3] == ["0.550", ""]
    assert lines["aggregation=feddyn"][2] == ""  # another code version: not compared
    assert lines["aggregation=scaffold, lr=0.1"][1:3] == ["0.600", "+5.0"]  # the others keep their names
    assert lines["aggregation=scaffold"][4:6] == ["7,176", "1.00"]


def test_rows_at_another_alpha_or_under_dp_get_their_own_table_and_fedavg(tmp_path):
    cache = tmp_path / "skew.jsonl"
    dp = {"dp-epsilon": "8", "lr": "0.05"}
    cache.write_text("\n".join([
        _row("aaaa", [0.50, 0.54, 0.55, 0.56], aggregation="fedavg"),
        _row("aaaa", [0.50, 0.51, 0.51, 0.51], aggregation="fedavg", **dp),
        _row("aaaa", [0.50, 0.60, 0.61, 0.62], aggregation="scaffold", **dp),
        _row("aaaa", [0.50, 0.70, 0.70, 0.70], aggregation="fedavg", alpha="1.0"),
        _row("aaaa", [0.50, 0.68, 0.68, 0.68], aggregation="scaffold", alpha="1.0"),
    ]) + "\n")
    page = label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")])
    tables = {}
    for line in page.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and "---" not in line and "remedy" not in line:
            cells = line.split(" | ")
            tables.setdefault(title, {})[cells[0].lstrip("| ")] = cells[1:3]
    assert tables["qnli (alpha 0.1)"] == {"fedavg": ["0.550", ""]}
    assert tables["qnli (alpha 0.1, dp-epsilon 8)"] == {"aggregation=scaffold": ["0.610", "+10.0"],
                                                        "fedavg": ["0.510", ""]}
    assert tables["qnli (alpha 1.0)"] == {"fedavg": ["0.700", ""], "aggregation=scaffold": ["0.680", "-2.0"]}


def test_seeds_make_one_line_with_an_interval_and_a_paired_difference(tmp_path):
    cache = tmp_path / "skew.jsonl"
    runs = [("fedavg", None, 0.55), ("fedavg", "1", 0.53), ("fedavg", "2", 0.57),
            ("scaffold", None, 0.58), ("scaffold", "1", 0.55), ("scaffold", "2", 0.60),
            ("feddyn", "1", 0.50)]  # one seed, paired with FedAvg's at that seed only
    cache.write_text("\n".join(_row("aaaa", [s] * 4, aggregation=rule, **({"data-seed": seed} if seed else {}))
                               for rule, seed, s in runs) + "\n")
    page = label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")])
    lines = _lines(page)
    assert set(lines) == {"fedavg", "aggregation=scaffold", "aggregation=feddyn"}
    # mean 0.5767, sd 0.0252, t(2) 4.303: half-width 0.0625; differences 3, 2, 3 points: 2.67 +- 1.43
    assert lines["aggregation=scaffold"][1:3] == ["0.577 ± 0.063 (3 seeds)", "+2.7 ± 1.4 (3 seeds)"]
    assert lines["fedavg"][1:3] == ["0.550 ± 0.050 (3 seeds)", ""]
    assert lines["aggregation=feddyn"][1:3] == ["0.500 (data seed 1)", "-3.0"]  # one run, not at seed 0: named


def test_a_line_that_evaluates_at_another_interval_says_so(tmp_path):
    cache = tmp_path / "skew.jsonl"
    short = {"eval-every": "25", "local-epochs": "0.2", "num-server-rounds": "150"}
    cache.write_text("\n".join([_row("aaaa", [0.50, 0.54, 0.55, 0.56], aggregation="fedavg"),
                                _row("aaaa", [0.50, 0.57, 0.58, 0.59], aggregation="scaffold"),
                                _row("aaaa", [0.50, 0.60, 0.61, 0.62], aggregation="fedavg", **short)]) + "\n")
    page = label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")])
    assert "| evaluations (every 5 rounds) |" in page
    rows = _lines(page)
    assert rows["eval-every=25, local-epochs=0.2, num-server-rounds=150"][3] == "0.500 0.600 0.610 0.620 (every 25)"
    assert rows["aggregation=scaffold"][3] == "0.500 0.570 0.580 0.590"


def test_a_missing_cache_is_one_line_and_exit_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        label_skew_page.main(["--cache", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "page.md")])
    assert exit_.value.code == 2 and "is not a file: expected the comparison's JSON lines" in capsys.readouterr().err
    assert not (tmp_path / "page.md").exists()


@pytest.mark.parametrize("bad", ['{"key": oops', '{"key": "{}"}', '[1, 2]'])
def test_a_line_that_is_not_a_cached_run_is_one_line_and_exit_status_2(tmp_path, capsys, bad):
    cache = tmp_path / "skew.jsonl"
    cache.write_text(_row("aaaa", [0.5] * 4, aggregation="fedavg") + "\n" + bad + "\n")
    with pytest.raises(SystemExit) as exit_:
        label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "line 2 is not a cached run" in err and len(err.strip().splitlines()) == 2
    assert not (tmp_path / "page.md").exists()


def test_a_setting_most_rows_share_does_not_merge_fedavg_with_its_variant(tmp_path):
    cache = tmp_path / "skew.jsonl"
    plain = {"dp-count-noise": "0"}  # set by three rows of five, FedAvg's among them: the majority, not the baseline
    cache.write_text("\n".join([
        _row("aaaa", [0.50, 0.58, 0.58, 0.58], aggregation="fedavg"),
        _row("aaaa", [0.50, 0.59, 0.59, 0.59], aggregation="scaffold"),
        _row("aaaa", [0.50, 0.49, 0.49, 0.49], aggregation="fedavg", **plain),
        _row("aaaa", [0.50, 0.65, 0.65, 0.65], aggregation="fedadam", **plain),
        _row("aaaa", [0.50, 0.52, 0.52, 0.52], aggregation="fedadam", lr="1.0", **plain),
    ]) + "\n")
    lines = _lines(label_skew_page.main(["--cache", str(cache), "--out", str(tmp_path / "page.md")]))
    assert lines["fedavg"][1:3] == ["0.580", ""]
    assert lines["dp-count-noise=0"][1:3] == ["0.490", "-9.0"]
    assert lines["aggregation=scaffold"][1:3] == ["0.590", "+1.0"]
    assert lines["aggregation=fedadam, dp-count-noise=0"][1:3] == ["0.650", "+7.0"]
