"""Equal tuning: every method gets the same candidates, and the choice is the best mean held-out score."""

import re
from pathlib import Path

import pytest

from simulations.harness import equal_tuning as et

PLAN = Path(__file__).resolve().parents[1] / "simulations" / "harness" / "tuning.toml"


def test_the_shipped_plan_gives_every_compared_method_the_same_budget():
    plan = et.load_plan(PLAN)
    assert plan.tasks == ("sst2", "qnli") and plan.validation_samples == 1000 and plan.alphas == (1.0, 0.1)
    per_method = {m: len(et.federated_candidates(plan, m, 0.1)) for m in plan.federated}
    assert per_method == {"slash": 6, "lora": 6}  # three rates for each of AdamW and SGD
    assert {(c["local-optimizer"], c["lr-decay"]) for c in et.federated_candidates(plan, "lora", 1.0)} == {
        ("adamw", "cosine"), ("sgd", "cosine")}
    assert {m: len(et.reference_candidates(plan, m)) for m in plan.reference} == {"full": 3, "slash": 3}


@pytest.mark.parametrize("old, new, message", [
    ("lora = { adamw = [0.001, 0.003, 0.009], sgd = [0.01, 0.03, 0.1] }",
     "lora = { adamw = [0.001, 0.003, 0.009], sgd = [0.01, 0.03] }", "the same number of rates"),
    ("lora = { adamw = [0.001, 0.003, 0.009], sgd = [0.01, 0.03, 0.1] }",
     "lora = { adamw = [0.001, 0.003, 0.009] }", "the same number of rates"),
    ("slash = [0.01, 0.03, 0.09]", "slash = [0.01, 0.03]", "[reference.rates]: every method needs the same"),
    ("lora = {", "lorra = {", "unknown method 'lorra'"),
])
def test_a_plan_with_unequal_budgets_is_refused(tmp_path, old, new, message):
    text = PLAN.read_text()
    assert old in text
    (tmp_path / "plan.toml").write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=re.escape(message)):
        et.load_plan(tmp_path / "plan.toml")


def constant_rate(candidate: dict) -> dict:
    """A scored candidate as the settings of its run with the other decay."""
    return {**{k: v for k, v in candidate.items() if k not in ("scores", "mean")}, "lr-decay": "none"}


class FakeRuns:
    """Held-out rows made up from a score per (task, optimizer, rate, decay): nothing trains."""

    def __init__(self, scores: dict) -> None:
        self.scores = scores

    def federated(self, task: str, candidate: dict) -> dict | None:
        value = self.scores.get((task, candidate["local-optimizer"], candidate["lr"], candidate["lr-decay"]))
        if value is None:
            return None
        return {"status": "completed", "metrics": [{}, {"accuracy": 0.0}, {"accuracy": value}, {"accuracy": value},
                                                   {"accuracy": value}]}


def test_the_choice_is_the_best_mean_over_the_tasks_then_against_the_other_decay():
    plan = et.load_plan(PLAN)
    scores = {(t, o, r, "cosine"): 0.6 for t in plan.tasks for o in et.OPTIMIZERS for r in plan.federated["slash"][o]}
    scores[("sst2", "adamw", 0.045, "cosine")] = 0.95  # best on SST-2 alone, poor on QNLI
    scores[("qnli", "adamw", 0.045, "cosine")] = 0.5
    scores[("sst2", "sgd", 0.3, "cosine")] = 0.8  # best on the mean: (0.8 + 0.7) / 2
    scores[("qnli", "sgd", 0.3, "cosine")] = 0.7
    runs = FakeRuns(scores)
    pending = et.choose(plan, runs, "federated", et.federated_candidates(plan, "slash", 0.1),
                        constant_rate)
    assert pending["chosen"] is None  # the winner's other decay has not run yet
    assert pending["candidates"][-1] == {"method": "slash", "alpha": 0.1, "local-optimizer": "sgd", "lr": 0.3,
                                         "lr-decay": "none", "scores": {"sst2": None, "qnli": None}, "mean": None}
    for task, value in (("sst2", 0.78), ("qnli", 0.74)):  # mean 0.76 beats cosine's 0.75
        scores[(task, "sgd", 0.3, "none")] = value
    done = et.choose(plan, runs, "federated", et.federated_candidates(plan, "slash", 0.1),
                     constant_rate)
    assert (done["chosen"]["local-optimizer"], done["chosen"]["lr"], done["chosen"]["lr-decay"]) == ("sgd", 0.3, "none")
    assert done["chosen"]["mean"] == 0.76 and len(done["candidates"]) == 7


def test_a_pinned_plan_refuses_to_run_under_other_code_but_reads_its_cache(tmp_path, monkeypatch, capsys, glue_dir):
    text = re.sub(r'^commit = ".*"$', 'commit = "' + "a" * 40 + '"', PLAN.read_text(), flags=re.MULTILINE)
    text = text.replace('cache = "docs/results/tuning.jsonl"', f'cache = "{tmp_path / "tuning.jsonl"}"')
    text = text.replace('grid = "simulations/harness/grid.toml"', f'grid = "{PLAN.parent / "grid.toml"}"')
    (tmp_path / "plan.toml").write_text(text)
    monkeypatch.setattr(et, "changed_modules", lambda kind, commit: ["fedrp.train"] if kind == "reference" else [])
    monkeypatch.setattr(et, "cell_key", lambda kind, settings, commit=None: f"{kind}@{commit}")  # no git lookup
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDRP_GLUE_DIR", str(glue_dir))
    with pytest.raises(SystemExit) as stop:
        et.main(["--config", str(tmp_path / "plan.toml")])
    assert stop.value.code == 2 and f"pins commit {'a' * 40}" in capsys.readouterr().err
    out = et.main(["--config", str(tmp_path / "plan.toml"), "--dry-run"])  # reading what is cached is fine
    assert out["federated"]["slash@1"]["chosen"] is None


def test_the_page_shows_every_candidate_and_marks_only_the_chosen_one():
    plan = et.load_plan(PLAN)
    scores = {(t, o, r, "cosine"): 0.6 for t in plan.tasks for o in et.OPTIMIZERS for r in plan.federated["slash"][o]}
    scores |= {("sst2", "sgd", 0.3, "cosine"): 0.8, ("qnli", "sgd", 0.3, "cosine"): 0.7}
    scores |= {("sst2", "sgd", 0.3, "none"): 0.7, ("qnli", "sgd", 0.3, "none"): 0.7}  # the other decay loses
    result = et.choose(plan, FakeRuns(scores), "federated", et.federated_candidates(plan, "slash", 0.1),
                       constant_rate)
    pending = et.choose(plan, FakeRuns({}), "federated", et.federated_candidates(plan, "lora", 0.1), dict)
    page = et.render(plan, {"federated": {"slash@0.1": result, "lora@0.1": pending}, "reference": {}}, PLAN)
    slash, lora = page.split("## Federated slash at alpha 0.1")[1].split("## Federated lora at alpha 0.1")
    rows = [line for line in slash.splitlines() if line.startswith("| ") and line[2:5] in ("ada", "sgd", "**s")]
    assert len(rows) == 7 and [r for r in rows if "**" in r] == [("| **sgd** | **0.3** | **cosine** | **0.800** | "
                                                                  "**0.700** | **0.750** |")]
    assert "| sgd | 0.3 | none | 0.700 | 0.700 | 0.700 |" in rows
    assert "Chosen: local-optimizer sgd, lr 0.3, lr-decay cosine." in slash
    assert lora.count("| – | – | – |") == 6 and "Chosen: not yet" in lora and "**" not in lora


def test_a_page_in_a_missing_folder_is_one_line_and_exit_status_2_before_anything_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        et.main(["--page", str(tmp_path / "no-such-folder" / "tuning.md")])
    assert stop.value.code == 2 and "expected a file in an existing folder" in capsys.readouterr().err
