"""The GLUE grid runner and its results page: config, cells, the resumable cache, QNLI's split.

No model runs here: the sweep gets a fake cell runner, and the results page reads a synthetic
cache (its numbers are made up for the test and never written outside tmp_path).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from fedrp import glue
from fedrp.payload import error_line
from simulations.harness import results_page, results_rows, results_targets
from simulations.harness.code_version import code_version
from simulations.harness.grid import cell_key, parse_only, prune_checkpoints, select, sweep
from simulations.harness.grid_config import cells, load_config, task_label
from simulations.harness.qnli_split import held_out_indices, read_rows, split_qnli

CONFIG = Path(__file__).resolve().parents[1] / "simulations" / "harness" / "grid.toml"

SMALL = """
[grid]
tasks = ["mrpc", "stsb"]
alphas = [1, 0.1]
methods = ["slash", "full"]
cache = "{cache}"
estimate = "a test"

[federated]
engine = "inprocess"
num-supernodes = 4
num-server-rounds = 6
eval-every = 2
max-train-samples = 200
max-eval-samples = 100

[reference]
methods = ["full", "slash"]
epochs = 2
"""


def small_config(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text.replace("{cache}", str(tmp_path / "cells.jsonl")))
    return path


def test_shipped_config_has_72_distinct_cells_with_two_references_per_task_and_48_at_two_more_seeds(glue_dir):
    grid = load_config(CONFIG, str(glue_dir))
    every = cells(grid)
    assert len(every) == 120 and len({cell_key(c) for c in every}) == 120
    own, extra = [c for c in every if c["seed"] == 0], [c for c in every if c["seed"]]
    assert Counter(c["kind"] for c in own) == {"federated": 60, "reference": 12}
    # slash and LoRA at both alphas and both references, on the four target tasks, at data seeds 1 and 2
    assert Counter((c["seed"], c["kind"]) for c in extra) == {(1, "federated"): 16, (1, "reference"): 8,
                                                            (2, "federated"): 16, (2, "reference"): 8}
    assert {c["task"] for c in extra} == {"sst2", "mrpc", "stsb", "qnli"}
    assert {c["method"] for c in extra if c["kind"] == "federated"} == {"slash", "lora"}
    for cell in extra:  # the seed is a run option: the same cell at seed 0 differs in it alone
        base = next(c for c in own if all(c[k] == cell[k] for k in ("kind", "task", "method", "alpha")))
        assert cell["options"] == {**base["options"], "data-seed": cell["seed"]}
    refs = [c for c in own if c["kind"] == "reference"]
    assert sorted((c["task"], c["method"]) for c in refs) == sorted((t, m) for t in grid.tasks
                                                                    for m in ("full", "slash"))
    assert grid.federated["engine"] == "inprocess"
    assert grid.federated["lr"] == 0.0 and grid.federated["num-supernodes"] == 10  # 0: each method's federated rate
    for ref in refs:  # the same training subset and dev examples as the federated cells
        assert ref["options"]["max-train-samples"] == grid.federated["max-train-samples"] == 2000
        assert grid.federated["max-eval-samples"] == 0 and "max-eval-samples" not in ref["options"]  # whole dev set
    assert task_label(grid, "qnli") == "QNLI (dev split: 4463 train / 1000 held out)"
    qnli = [c for c in every if c["task"] == "qnli"]
    assert {c["data"] for c in qnli} == {"qnli-dev-split:held-out=1000,seed=0"}


@pytest.mark.parametrize("old, new, message", [
    ('tasks = ["mrpc", "stsb"]', 'tasks = ["mrpc", "qqq"]', "unknown GLUE task 'qqq'"),
    ('methods = ["slash", "full"]', 'methods = ["slash", "prefix"]', "unknown method 'prefix'"),
    ("alphas = [1, 0.1]", "alphas = [-1, 0.1]", "-1 is not a positive number"),
    ("num-server-rounds = 6", "num-server-rounds = 6\nrounds = 3", "unknown run-config key 'rounds'"),
    ("num-server-rounds = 6", 'num-server-rounds = 6\ntask = "rte"', "'task' is set per cell"),
    ("epochs = 2", "epochs = 2\nlearning-rate = 1", "[reference]: unknown key 'learning-rate'"),
    ("[grid]", "[grids]\n[grid]", "section 'grids' is unknown"),
    ('engine = "inprocess"', 'engine = "ray"', "[federated] engine: expected one of ['flower', 'inprocess']"),
    ('methods = ["full", "slash"]', 'methods = ["full", "prefix"]', "[reference] methods: expected some of"),
    ('methods = ["full", "slash"]', "methods = []", "[reference] methods: expected some of"),
    ("[reference]", '[[federated-override]]\nmethods = ["lora"]\nlr = 0.1\n[reference]', "expected some of the grid's methods"),
    ("[reference]", '[[federated-override]]\nlocal-optimizer = "sgdd"\n[reference]', "local-optimizer must be"),
    ("[reference]", "[[federated-override]]\nalpha = 0.5\n[reference]", "'alpha' cannot differ between cells"),
    ("[reference]", "[[federated-override]]\nalphas = [0]\n[reference]", "0 is not a positive number"),
    ("[reference]", '[[federated-override]]\ntasks = ["rte"]\n[reference]', "tasks: expected some of the grid's tasks"),
    ("[reference]", '[[federated-override]]\nmethods = ["full"]\nlocal-optimizer = "sgd"\n[reference]',
     "full has no measured federated rate"),
    ("[reference]", "[seeds]\nseeds = [0, 1]\n[reference]", "[seeds] seeds: expected distinct positive integers"),
    ("[reference]", "[seeds]\nseeds = [1, 1]\n[reference]", "[seeds] seeds: expected distinct positive integers"),
    ("[reference]", '[seeds]\ntasks = ["rte"]\n[reference]', "[seeds] tasks: expected some of the grid's"),
    ("[reference]", '[seeds]\nmethods = ["lora"]\n[reference]', "[seeds] methods: expected some of the grid's"),
    ("[reference]", '[seeds]\nreference-methods = ["lora"]\n[reference]', "[seeds] reference-methods: expected"),
    ("[reference]", "[seeds]\nseed = [1]\n[reference]", "[seeds]: key 'seed' is unknown"),
])
def test_config_refuses_unknown_values_by_name(tmp_path, old, new, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(small_config(tmp_path, SMALL.replace(old, new)))


def test_overrides_replace_the_shared_settings_in_the_cells_they_name_only(tmp_path):
    text = SMALL.replace("[reference]", """[[federated-override]]
methods = ["slash"]
alphas = [0.1]
local-optimizer = "sgd"
lr = 0.3

[[federated-override]]
num-server-rounds = 8

[[federated-override]]
methods = ["slash"]
tasks = ["mrpc"]
local-loss = "ce"

[reference]""")
    grid = load_config(small_config(tmp_path, text))
    options = {(c["task"], c["method"], c["alpha"]): c["options"] for c in cells(grid) if c["kind"] == "federated"}
    for task in ("mrpc", "stsb"):
        assert (options[task, "slash", 0.1]["local-optimizer"], options[task, "slash", 0.1]["lr"]) == ("sgd", 0.3)
        for other in [(task, "slash", 1.0), (task, "full", 0.1), (task, "full", 1.0)]:
            assert "local-optimizer" not in options[other] and "lr" not in options[other], other
    assert {o["num-server-rounds"] for o in options.values()} == {8}  # an override without methods or alphas: all
    assert {k for k, o in options.items() if "local-loss" in o} == {("mrpc", "slash", 1.0), ("mrpc", "slash", 0.1)}
    assert results_page.local_rates(grid, "slash") == "AdamW 0.015 at α 1; SGD (momentum 0.9) 0.3 at α 0.1"
    text = text.replace('tasks = ["mrpc"]\nlocal-loss = "ce"', 'tasks = ["stsb"]\nlr = 0.05')
    assert results_page.local_rates(load_config(small_config(tmp_path, text)), "slash") == (  # later tables win
        "AdamW 0.015 at α 1 on MRPC; AdamW 0.05 at α 1 on STS-B; SGD (momentum 0.9) 0.3 at α 0.1 on MRPC; "
        "SGD (momentum 0.9) 0.05 at α 0.1 on STS-B")


def test_only_selects_cells_and_refuses_values_outside_the_grid(glue_dir):
    grid = load_config(CONFIG, str(glue_dir))
    picked = select(cells(grid), parse_only(["task=RTE,method=slash,alpha=1"], grid))
    assert [(c["kind"], c["method"], c["alpha"]) for c in picked] == [("reference", "full", None),
                                                                     ("reference", "slash", None),
                                                                     ("federated", "slash", 1.0)]
    assert len(select(cells(grid), parse_only(["kind=federated,task=rte,task=mrpc"], grid))) == 28  # MRPC's seeds too
    seed_one = select(cells(grid), parse_only(["seed=1"], grid))
    assert len(seed_one) == 24 and {c["options"]["data-seed"] for c in seed_one} == {1}
    for spec, message in [("alpha=0.5", "not among the grid's alpha values"), ("task=qqq", "unknown GLUE task"),
                          ("seed=3", "not among the grid's seed values"),
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
    rows = sweep(todo, cache, runner, record={"command": "python -m simulations.harness.grid"})
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


def test_a_new_code_version_changes_the_key_and_reruns_the_cell(tmp_path, monkeypatch):
    grid = load_config(small_config(tmp_path))
    todo, cache, calls = cells(grid)[:3], tmp_path / "cells.jsonl", []

    def runner(cell):
        calls.append(cell_key(cell))
        return {"status": "completed", "final_metrics": {"accuracy": 0.5}}

    sweep(todo, cache, runner)
    sweep(todo, cache, runner)
    assert len(calls) == 3  # the same code: the cached rows are reused
    before = [cell_key(c) for c in todo]
    monkeypatch.setattr("simulations.harness.cells.code_version", lambda kind, commit=None: "another-version")
    assert all(cell_key(c) != key for c, key in zip(todo, before))
    sweep(todo, cache, runner)
    lines = cache.read_text().splitlines()
    assert len(calls) == 6 and len(lines) == 6  # rerun, the old rows kept beside
    assert json.loads(lines[-1])["key"] == cell_key(todo[-1]) and '"code": "another-version"' in cell_key(todo[-1])


def test_a_pinned_grid_reports_its_commits_cells_and_refuses_to_run_under_other_code(
        tmp_path, committed_project, glue_dir, monkeypatch, capsys):
    from simulations.harness import grid as grid_module

    root, commit = committed_project
    config = small_config(tmp_path, SMALL.replace('estimate = "a test"', f'estimate = "a test"\ncommit = "{commit}"'))
    grid = load_config(config, str(glue_dir))
    todo = [c for c in cells(grid) if (c["task"], c["method"], c["alpha"]) in FINAL]
    sweep(todo, tmp_path / "cells.jsonl", synthetic_row)  # cells of the pinned code
    out = tmp_path / "RESULTS.md"
    page = ["--config", str(config), "--out", str(out), "--figures", str(tmp_path / "fig"), "--data-dir", str(glue_dir)]
    results_page.main(page)
    assert "8 of 12 cells" in out.read_text() and "the result code is unchanged since" in out.read_text()

    text = (root / "fedrp/train.py").read_text()
    (root / "fedrp/train.py").write_text(text.replace("import math", "import math as math_", 1))
    code_version.cache_clear()
    results_page.main(page)  # the page still shows the pinned commit's cells, and says what changed
    assert "8 of 12 cells" in out.read_text()
    assert f"result code at commit `{commit}`" in out.read_text() and "changed since in `fedrp.train`;" in out.read_text()
    monkeypatch.setattr(grid_module, "run_one", lambda *a: pytest.fail("a cell ran under unpinned code"))
    with pytest.raises(SystemExit) as stop:
        grid_module.main(["--config", str(config), "--data-dir", str(glue_dir)])
    assert stop.value.code == 2 and f"pins the grid to commit {commit}" in capsys.readouterr().err
    grid_module.main(["--config", str(config), "--data-dir", str(glue_dir), "--dry-run"])
    assert f"code of commit {commit}" in capsys.readouterr().out

    config.write_text(config.read_text().replace(commit, "f" * 40))
    for main in (grid_module.main, results_page.main):
        with pytest.raises(SystemExit) as stop:
            main(["--config", str(config), "--data-dir", str(glue_dir), "--dry-run"] if main is grid_module.main
                 else page)
        assert stop.value.code == 2 and "not in the git history" in capsys.readouterr().err


def _metrics(task: str, x: float) -> dict:
    """Made-up official metrics of a task whose first metric is x."""
    return {"mrpc": {"f1": x, "accuracy": x - 0.1}, "stsb": {"pearson": x, "spearmanr": x - 0.01}}[task]


# Made-up first metrics (never written outside tmp_path). Centralized full: 0.80 on both tasks, so
# federated slash at alpha 1 is 0.97x on MRPC (above 0.95x) and 0.90x on STS-B (below it); at
# alpha 0.1, 0.85x on MRPC (below 0.90x). Centralized slash on MRPC is 0.78, so 0.95x of it is
# 0.741: slash at alpha 1 first reaches it at round 4 (evaluated every 2 rounds; round 6 reaches it
# too), at alpha 0.1 never. Federated full fails on STS-B at alpha 0.1.
FINAL = {("mrpc", "full", None): 0.80, ("stsb", "full", None): 0.80, ("mrpc", "slash", None): 0.78,
         ("mrpc", "slash", 1.0): 0.776, ("stsb", "slash", 1.0): 0.72, ("mrpc", "slash", 0.1): 0.68,
         ("mrpc", "full", 0.1): 0.72, ("stsb", "full", 0.1): None}
ROUNDS = {("mrpc", "slash", 1.0): [0.60, 0.76, 0.776], ("mrpc", "slash", 0.1): [0.50, 0.60, 0.68]}
# MRPC's federated slash also at data seeds 1 and 2 ([seeds] in the page test), each seed's final metric this much
# apart, against the same references: at alpha 1 the ratios 0.97, 0.9725, 0.9675 have the 95% interval
# [0.964, 0.976], above 0.95x; at alpha 0.1 0.85x sits wholly below 0.90x.
SEED_DELTA = {0: 0.0, 1: 0.002, 2: -0.002}
SEEDS = """
[seeds]
seeds = [1, 2]
tasks = ["mrpc"]
methods = ["slash"]
reference-methods = ["full", "slash"]
"""


def synthetic_row(cell: dict) -> dict:
    """A made-up row shaped like grid's (metrics per round, `{}` where the round was not evaluated)."""
    task, key = cell["task"], (cell["task"], cell["method"], cell["alpha"])
    if FINAL[key] is None:
        raise RuntimeError("Traceback\nRuntimeError: synthetic failure")
    size = 7176 if cell["method"] == "slash" else 90_000_000
    if cell["kind"] == "reference":
        return {"status": "completed", "final_metrics": _metrics(task, FINAL[key]), "params": size // 4, "seconds": 9}
    evaluated = ROUNDS.get(key, [0.5, 0.6, FINAL[key]])
    per_round = [{} if rnd % 2 else _metrics(task, evaluated[rnd // 2 - 1]) for rnd in range(1, 7)]
    final = FINAL[key] + SEED_DELTA[cell["seed"]]
    return {"status": "completed", "initial_metrics": _metrics(task, 0.3), "metrics": per_round,
            "final_metrics": _metrics(task, final), "bytes_up_per_client": [size] * 6,
            "bytes_up_total": [2 * size] * 6, "params": size // 4, "seconds": 30}


def test_results_page_opens_with_the_table_and_judges_targets_and_rounds(tmp_path, glue_dir):
    grid = load_config(small_config(tmp_path, SMALL + SEEDS), str(glue_dir))
    todo = [c for c in cells(grid) if (c["task"], c["method"], c["alpha"]) in FINAL]
    sweep(todo, tmp_path / "cells.jsonl", synthetic_row, record={"command": "python -m simulations.harness.grid --only x=y"})
    out, figures = tmp_path / "docs" / "RESULTS.md", tmp_path / "docs" / "results"
    results_page.main(["--config", str(grid.config), "--out", str(out), "--figures", str(figures),
                       "--data-dir", str(glue_dir)])
    text = out.read_text()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = lines[first: next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))]
    assert first <= 5 and text.index("## Targets") > text.index(table[-1])  # the page opens with the table
    assert table[0].startswith("| method | α | MRPC F1/acc | STS-B Pearson/Spearman | trainable params |")
    assert "16 of 20 cells are in the cache" in text  # 15 done and 1 failed
    row = {line.split(" | ")[0] + " | " + line.split(" | ")[1]: line for line in table[2:]}
    # MRPC at three seeds: 77.6, 77.8, 77.4 have the t interval's half-width 4.30 * 0.2 / sqrt 3 = 0.5
    assert row["| slash | 1"] == "| slash | 1 | 77.6/67.6 ±0.5 (0.97x) | 72.0/71.0 (0.90x) † | 1,794 | 7.0 KiB |"
    assert row["| full | 1"] == "| full | 1 | not run | not run | – | – |"
    assert row["| full | 0.1"].startswith("| full | 0.1 | 72.0/62.0 (0.90x) † | failed [1] |")
    assert row["| centralized full | –"].startswith("| centralized full | – | 80.0/70.0 ±0.0 | 80.0/79.0 † |")
    assert row["| centralized slash | –"].startswith("| centralized slash | – | 78.0/68.0 ±0.0 | not run |")
    assert row["| majority class | –"] == "| majority class | – | 81.2/68.4 | – | 0 | – |"  # MRPC's dev: 279 of 408 positive
    assert sum(line.count("not run") for line in table) == 4
    assert "- [1] STS-B / full, α=0.1: `RuntimeError: synthetic failure`" in text
    target = {line.split(":")[0]: line for line in lines if line.startswith("- slash at α=")}
    assert target["- slash at α=1 on MRPC"] == ("- slash at α=1 on MRPC: 0.97x centralized full (77.6 vs 80.0), 95% "
                                                "interval [0.96x, 0.98x] over 3 seeds; target ≥ 0.95x: met")
    assert target["- slash at α=1 on STS-B"].endswith("0.90x centralized full (72.0 vs 80.0), one seed; target ≥ 0.95x: "
                                                      "undecided (one seed)")  # below, but one seed decides nothing
    assert target["- slash at α=0.1 on MRPC"].endswith("over 3 seeds; target ≥ 0.90x: not met")
    assert target["- slash at α=0.1 on STS-B"].endswith("not yet measured (federated slash not run)")
    assert "- slash vs LoRA at α=1 (first metric x100, slash minus LoRA at the same seed, averaged over the tasks): " \
           "not yet measured" in text
    assert "| MRPC | <= 4, <= 4, <= 4 | not in 6, not in 6, not in 6 |" in text
    assert "| STS-B | not yet measured | not yet measured |" in text
    assert "Round target by task: met: MRPC; not yet measured: STS-B." in text
    assert "python -m simulations.harness.grid --only x=y" in text and "MRPC 200 of 3,668" in text
    assert "MRPC 100 of 408" in text and f"--config {grid.config} --only task=mrpc   # 1 missing" in text
    for task in ("mrpc", "stsb"):
        assert (figures / f"{task}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"![{task_label(grid, task)}](results/{task}.png)" in text
    results_page.main(["--config", str(grid.config), "--out", str(out), "--figures", str(figures),
                       "--data-dir", str(glue_dir)])
    assert out.read_text() == text  # the page is a function of the cache


def test_first_round_reaching_skips_rounds_that_were_not_evaluated():
    row = {"metrics": [{}, {"accuracy": 0.5}, {}, {"accuracy": 0.9}, {}, {"accuracy": 0.95}]}
    assert results_targets.first_round_reaching(row, "accuracy", 0.9) == 4
    assert results_targets.first_round_reaching(row, "accuracy", 0.99) is None


def test_a_failed_cell_keeps_its_errors_last_line_and_finished_runs_keep_one_checkpoint(tmp_path):
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nValueError: no GLUE file at /x\nINFO shutting down\n"
    assert error_line(log) == "ValueError: no GLUE file at /x"
    assert error_line("just text\n\n") == "just text" and error_line("") == "(no output)"
    for rnd in (1, 2, 10):
        (tmp_path / f"round-{rnd:04d}.safetensors").write_bytes(b"x")
    prune_checkpoints(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["round-0010.safetensors"]


def test_a_ray_error_report_becomes_one_readable_line():
    report = ("\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=123, ip=10.0.0.1)\n  File \"x.py\", line 3, in run\n"
              "    raise RuntimeError('injected client failure')\n\x1b[31mRuntimeError: injected client failure\x1b[0m\n")
    assert error_line(report) == "RuntimeError: injected client failure"
    flower = ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m\n"
              "  File \"ray_actor.py\", line 65, in run\nflwr.clientapp.client_app.ClientAppException: \n"
              "Exception ClientAppException occurred. Message: injected client failure'>")
    assert error_line(flower) == "injected client failure"


def test_the_page_names_the_cells_another_machine_ran():
    rows = {("sst2", "lora", 1.0): {"device": "NVIDIA H200"}, ("sst2", "slash", 1.0): {},
            ("sst2", "full", None): {"device": "cpu"}, ("cola", "full", 1.0): {"device": "NVIDIA H200"}}
    line = results_page.ran_elsewhere(rows)
    assert line.strip().startswith("2 federated cells ran on NVIDIA H200")
    assert "cola full α=1, sst2 lora α=1." in line and "slash" not in line and "cpu" not in line
    assert results_page.ran_elsewhere({("sst2", "full", None): {"device": "cpu"}}) == ""


def test_cell_times_taken_on_a_shared_machine_are_marked_as_upper_bounds():
    grid = load_config(CONFIG)
    rows = {("sst2", "slash", 1.0): {0: {"status": "completed", "seconds": 100.0}},
            ("mrpc", "slash", 1.0): {0: {"status": "completed", "seconds": 300.0, "cores_shared": True}}}
    lines = results_page.time_lines(grid, rows)
    slash = next(line for line in lines if line.startswith("| slash | 1 |"))
    assert "| 100 s | 300 s § |" in slash
    assert any(line.startswith("§ Ran while other jobs shared the 2 cores") for line in lines)
    alone = {("sst2", "slash", 1.0): rows[("sst2", "slash", 1.0)]}
    assert not any(line.startswith("§") for line in results_page.time_lines(grid, alone))
    alone[("sst2", "slash", 1.0)][1] = {"status": "completed", "seconds": 240.0, "cores_shared": True}
    lines = results_page.time_lines(grid, alone)  # another seed's time counts in the total and its mark
    assert "The other seeds' 1 cached cells: 4 min (0.1 h), 1 of them §." in lines
    assert "Total over the cached cells: 6 min (0.1 h)." in lines and any(line.startswith("§") for line in lines)


def test_the_page_counts_the_bytes_of_accepted_replies():
    """Rows cached before simulations.harness.cells counted accepted bytes only divided every reply's bytes by the accepted
    count: a round that refused one of five head-only replies read 5,133 B, not the 3,080 B a reply carries."""
    row = {"bytes_up_per_client": [3080.0] * 7 + [5133.3] + [3080.0] * 22, "params": 1283}
    assert results_rows.upload(row) == 3080.0 and results_rows.trainable(row) == 770
    assert results_rows.trainable({"params": 22_713_986}) == 22_713_986  # a reference reports its own count


def test_results_page_writes_the_qnli_split_it_reads_on_a_fresh_checkout(tmp_path, glue_dir, monkeypatch):
    """The split lives in gitignored scratch: without it QNLI's majority-class cell read '–' on a fresh clone."""
    monkeypatch.chdir(tmp_path)  # the config's relative scratch, runs/grid/glue-derived, is empty here
    out = tmp_path / "RESULTS.md"
    results_page.main(["--config", str(CONFIG), "--cache", str(CONFIG.parents[1] / "docs" / "results" / "cells.jsonl"),
                       "--out", str(out), "--figures", str(tmp_path / "figures"), "--data-dir", str(glue_dir)])
    majority = next(line for line in out.read_text().splitlines() if line.startswith("| majority class |"))
    assert majority.split(" | ")[5] == "50.5"  # 505 of the 1,000 held-out examples carry the training part's majority label


def test_slash_vs_lora_is_the_mean_of_seed_paired_differences_over_the_four_target_tasks():
    """Per seed, slash minus LoRA averaged over SST-2, MRPC, STS-B and QNLI; RTE and CoLA stay out."""
    grid = load_config(CONFIG)

    def row(task: str, x: float) -> dict:
        metric = glue.get_task(task).primary_metric
        return {"status": "completed", "final_metrics": {metric: x}}

    lora = {0: 0.80, 1: 0.80, 2: 0.80}
    slash = {"sst2": {0: 0.79, 1: 0.78, 2: 0.80}, "mrpc": {0: 0.80, 1: 0.79, 2: 0.79},
             "stsb": {0: 0.79, 1: 0.79, 2: 0.80}, "qnli": {0: 0.78, 1: 0.78, 2: 0.80}}
    seeded = {}
    for task in ("sst2", "mrpc", "stsb", "qnli", "rte"):
        seeded[(task, "lora", 1.0)] = {s: row(task, v) for s, v in lora.items()}
        seeded[(task, "slash", 1.0)] = {s: row(task, v) for s, v in slash.get(task, {0: 0.2, 1: 0.2, 2: 0.2}).items()}
    line = results_targets.lora_gap_line(grid, seeded, 1.0)
    # per seed: (-1 + 0 - 1 - 2) / 4 = -1.0, (-2 - 1 - 1 - 2) / 4 = -1.5, (0 - 1 + 0 + 0) / 4 = -0.25; mean -0.92
    assert "-0.9 over SST-2, MRPC, STS-B, QNLI, 95% interval [-2.5, +0.6] over 3 seeds" in line  # RTE's -60 left out
    assert line.endswith("target slash at most 2 points below: undecided")
    seeded[("qnli", "slash", 1.0)] = {0: row("qnli", 0.78)}  # QNLI at one seed: the verdict waits for it
    line = results_targets.lora_gap_line(grid, seeded, 1.0)
    assert "-1.0 over SST-2, MRPC, STS-B, QNLI, one seed; target slash at most 2 points below: undecided (one seed)" in line
    assert line.endswith("So far over the 3 tasks with 3 seeds (SST-2, MRPC, STS-B): -0.8, 95% interval [-2.0, +0.5] "
                         "over 3 seeds (not a verdict)")
