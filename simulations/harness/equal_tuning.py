"""Equal tuning: the same candidate budget for every method a verdict compares, chosen on held-out examples.

    python -m simulations.harness.equal_tuning [--config simulations/harness/tuning.toml] [--dry-run]
    python -m simulations.harness.equal_tuning --page docs/results/tuning.md   # the page, from the cache alone

The plan (simulations/harness/tuning.toml) gives each federated method the same number of rates for each
local optimizer at each alpha, and each centralized reference the same number of rates. Every
candidate runs on each of the plan's tasks with `validation-samples` training examples held out and
scored there, never on dev; its score is the mean over the tasks. The winner of each method (and
alpha) then runs once more with the other rate decay (federated) or schedule (centralized), and the
better of the two is chosen. Runs are cached (JSON lines, keyed by settings and code version), so
the plan resumes where it stopped; the choice is printed as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fedrp import glue
from fedrp.methods import METHODS
from simulations.harness.cells import CellCache, cell_key, condense, run_federation, run_reference
from simulations.harness.code_version import changed_modules
from simulations.harness.grid_config import data_dir_for, load_config, write_qnli_split
from simulations.harness.tune import score

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_PLAN = Path("simulations/harness/tuning.toml")
OPTIMIZERS = ("adamw", "sgd")  # both, for every federated method


@dataclasses.dataclass(frozen=True)
class Plan:
    """The parsed plan: tasks, held-out size, and each method's candidates."""

    tasks: tuple[str, ...]
    validation_samples: int
    cache: Path
    grid: Path
    alphas: tuple[float, ...]
    rounds: int
    eval_every: int
    decays: tuple[str, str]
    federated: dict[str, dict[str, tuple[float, ...]]]  # method -> optimizer -> rates
    epochs: float
    schedules: tuple[str, str]
    reference: dict[str, tuple[float, ...]]  # method -> rates
    commit: str | None = None  # the commit whose code the runs are of (run in a worktree of it); None: this tree


def load_plan(path: Path) -> Plan:
    """Read the plan and refuse one whose budgets differ: that is the point of it."""
    if not path.is_file():
        raise FileNotFoundError(f"no tuning plan at {path}: expected a TOML file like simulations/harness/tuning.toml")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    plan, fed, ref = raw.get("plan", {}), raw.get("federated", {}), raw.get("reference", {})
    tasks = tuple(glue.get_task(t).name for t in plan.get("tasks", []))
    federated = {m: {o: tuple(map(float, r)) for o, r in by_opt.items()} for m, by_opt in fed.get("rates", {}).items()}
    reference = {m: tuple(map(float, r)) for m, r in ref.get("rates", {}).items()}
    out = Plan(tasks=tasks, validation_samples=int(plan.get("validation-samples", 1000)),
               cache=Path(plan.get("cache", "docs/results/tuning.jsonl")),
               grid=Path(plan.get("grid", "simulations/harness/grid.toml")), alphas=tuple(map(float, fed.get("alphas", []))),
               rounds=int(fed.get("num-server-rounds", 20)), eval_every=int(fed.get("eval-every", 5)),
               decays=tuple(fed.get("decays", ("cosine", "none"))), federated=federated,
               epochs=float(ref.get("epochs", 5.0)), schedules=tuple(ref.get("schedules", ("linear", "constant"))),
               reference=reference, commit=plan.get("commit"))
    _check(out, path)
    return out


def _check(plan: Plan, path: Path) -> None:
    if not plan.tasks or not plan.alphas:
        raise ValueError(f"{path}: expected [plan] tasks and [federated] alphas, each at least one")
    for method in [*plan.federated, *plan.reference]:
        if method not in METHODS:
            raise ValueError(f"{path}: unknown method {method!r}; expected some of {list(METHODS)}")
    sizes = {(m, o): len(rates) for m, by_opt in plan.federated.items() for o, rates in by_opt.items()}
    if any(set(by_opt) != set(OPTIMIZERS) for by_opt in plan.federated.values()) or len(set(sizes.values())) > 1:
        raise ValueError(f"{path} [federated.rates]: every method needs the same number of rates for each of "
                         f"{list(OPTIMIZERS)}, got {sizes}")
    if len({len(r) for r in plan.reference.values()}) > 1:
        raise ValueError(f"{path} [reference.rates]: every method needs the same number of rates, got "
                         f"{ {m: len(r) for m, r in plan.reference.items()} }")
    if len(plan.decays) != 2 or len(plan.schedules) != 2:
        raise ValueError(f"{path}: decays and schedules each name two: the candidates' and the one compared after")


# ---- candidates ---------------------------------------------------------------------------

def federated_candidates(plan: Plan, method: str, alpha: float, decay: str | None = None) -> list[dict]:
    """A federated method's candidate settings at one alpha (decay None: the candidates' own decay)."""
    return [{"method": method, "alpha": alpha, "local-optimizer": opt, "lr": rate, "lr-decay": decay or plan.decays[0]}
            for opt in OPTIMIZERS for rate in plan.federated[method][opt]]


def reference_candidates(plan: Plan, method: str, schedule: str | None = None) -> list[dict]:
    """A centralized reference's candidate settings."""
    return [{"method": method, "lr": rate, "schedule": schedule or plan.schedules[0]}
            for rate in plan.reference[method]]


class Runs:
    """Each candidate on each task: its cache key, its cached row, and how to run it."""

    def __init__(self, plan: Plan, run: bool = True) -> None:
        self.plan, self.run = plan, run
        self.grid = load_config(plan.grid)
        self.cache = CellCache(plan.cache)
        self.scratch = Path("runs/tune")

    def federated(self, task: str, candidate: dict) -> dict:
        options = {**self.grid.federated, "task": task, **candidate, "validation-samples": self.plan.validation_samples,
                   "num-server-rounds": self.plan.rounds, "eval-every": self.plan.eval_every, "fraction-evaluate": 0.0}
        paths = {"data-dir": str(data_dir_for(self.grid, task)), "store": str((self.scratch / "tune.sqlite").resolve()),
                 "checkpoint-dir": str((self.scratch / "ckpt").resolve())}
        return self._row(cell_key("federated", {**paths, **options}, self.plan.commit),
                         lambda: condense({"settings": options}, run_federation({**paths, **options})))

    def reference(self, task: str, candidate: dict) -> dict:
        shared = {k: self.grid.federated[k] for k in ("max-train-samples",) if self.grid.federated.get(k)}
        options = {"task": task, **candidate, **shared, "epochs": self.plan.epochs,
                   "validation-samples": self.plan.validation_samples}
        paths = {"data-dir": str(data_dir_for(self.grid, task)), "out": str((self.scratch / "artifacts").resolve())}
        return self._row(cell_key("reference", {**paths, **options}, self.plan.commit), lambda: {
            "settings": options, "status": "completed", **run_reference({**paths, **options})})

    def _row(self, key: str, compute: Callable[[], dict]) -> dict | None:
        if not self.run:
            return self.cache.get(key)
        return self.cache.get_or_run(key, compute)


def held_out_score(task: str, row: dict | None, kind: str) -> float | None:
    """A run's score on the held-out examples: the mean of its last evaluations (federated) or its final metric."""
    if row is None or row.get("status") != "completed":
        return None
    metric = glue.get_task(task).metrics[0]
    return score(row, metric) if kind == "federated" else row["metrics"][metric]


def scored(plan: Plan, runs: Runs, kind: str, candidates: list[dict]) -> list[dict]:
    """Each candidate with its per-task scores and their mean (None until every task has run)."""
    out = []
    for candidate in candidates:
        per_task = {t: held_out_score(t, getattr(runs, kind)(t, candidate), kind) for t in plan.tasks}
        done = None not in per_task.values()
        out.append({**candidate, "scores": per_task,
                    "mean": round(sum(per_task.values()) / len(per_task), 4) if done else None})
    return out


def choose(plan: Plan, runs: Runs, kind: str, candidates: list[dict], other: Callable[[dict], dict]) -> dict:
    """The best candidate, then it against its variant with the other decay or schedule."""
    first = scored(plan, runs, kind, candidates)
    if any(c["mean"] is None for c in first):
        return {"candidates": first, "chosen": None}
    best = max(first, key=lambda c: c["mean"])
    variant = scored(plan, runs, kind, [other(best)])[0]
    if variant["mean"] is None:
        return {"candidates": [*first, variant], "chosen": None}
    return {"candidates": [*first, variant], "chosen": max([best, variant], key=lambda c: c["mean"])}


def tune_all(plan: Plan, runs: Runs) -> dict:
    """Every method's candidates and choice, federated per alpha, then the references."""
    def strip(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in ("scores", "mean")}

    out = {"tasks": list(plan.tasks), "validation_samples": plan.validation_samples, "federated": {}, "reference": {}}
    for alpha in plan.alphas:
        for method in plan.federated:
            out["federated"][f"{method}@{alpha:g}"] = choose(
                plan, runs, "federated", federated_candidates(plan, method, alpha),
                lambda c: {**strip(c), "lr-decay": plan.decays[1]})
    for method in plan.reference:
        out["reference"][method] = choose(plan, runs, "reference", reference_candidates(plan, method),
                                          lambda c: {**strip(c), "schedule": plan.schedules[1]})
    return out


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render(plan: Plan, out: dict, config: Path) -> str:
    """The choice as a Markdown page: every candidate's held-out score per task, its mean, and the winner."""
    tasks = " | ".join(plan.tasks)
    lines = [
        "# Equal tuning: every candidate on held-out examples", "",
        (f"Generated by `python -m simulations.harness.equal_tuning --page` from the cache `{plan.cache}` and the plan "
        f"`{config}`; do not edit by hand. Each method gets the same candidates at each alpha; a candidate's score is "
        f"the mean over {', '.join(plan.tasks)} of its score on {plan.validation_samples:,} training examples held out "
        "from the clients (never dev): the mean of the last three evaluations of a federated run, the final one of a "
        "centralized run. The winner runs once more with the other decay or schedule, and the better of the two is "
        f"chosen (**bold**). Runs are of commit {plan.commit or 'this tree'}; – is a run not yet cached."), ""]
    parts = [(f"Federated {key.replace('@', ' at alpha ')}, {plan.rounds} rounds", result, ("local-optimizer", "lr", "lr-decay"))
             for key, result in out["federated"].items()]
    parts += [(f"Centralized reference {key}, {plan.epochs:g} epochs", result, ("lr", "schedule"))
              for key, result in out["reference"].items()]
    for title, result, knobs in parts:
        chosen = result["chosen"]
        lines += [f"## {title}", "", f"| {' | '.join(knobs)} | {tasks} | mean |",
                  "| " + " | ".join("---" for _ in knobs) + " | " + " | ".join("---:" for _ in plan.tasks) + " | ---: |"]
        for c in result["candidates"]:
            row = [str(c[k]) for k in knobs] + [_cell(c["scores"][t]) for t in plan.tasks] + [_cell(c["mean"])]
            if chosen is not None and all(c[k] == chosen[k] for k in knobs):
                row = [f"**{v}**" for v in row]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "Chosen: " + (", ".join(f"{k} {chosen[k]}" for k in knobs) if chosen else "not yet: "
                                    "some candidates have not run on every task") + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--dry-run", action="store_true", help="the choice from what is cached; run nothing")
    parser.add_argument("--page", type=Path, help="write the choice from what is cached to this Markdown file; "
                        "run nothing")
    args = parser.parse_args(argv)
    args.dry_run = args.dry_run or args.page is not None
    try:
        if args.page is not None and not args.page.parent.is_dir():
            raise FileNotFoundError(f"--page {args.page}: expected a file in an existing folder")
        plan = load_plan(args.config)
        changed = sorted({m for kind in ("federated", "reference") for m in changed_modules(kind, plan.commit)}
                         if plan.commit else [])
        if changed and not args.dry_run:
            raise ValueError(f"{args.config} pins commit {plan.commit}, and this tree's result code differs from it "
                             f"({', '.join(changed)}): run the plan in a worktree of that commit")
        runs = Runs(plan, run=not args.dry_run)
        if "qnli" in plan.tasks:
            write_qnli_split(runs.grid)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    os.makedirs(runs.scratch, exist_ok=True)
    out = tune_all(plan, runs)
    if args.page is not None:
        args.page.write_text(render(plan, out, args.config))
        print(f"wrote {args.page}", file=sys.stderr)
    else:
        print(json.dumps(out), flush=True)
    if args.dry_run:
        todo = sum(c["mean"] is None for part in ("federated", "reference") for r in out[part].values()
                   for c in r["candidates"])
        print(f"{todo} candidates not yet scored on every task", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
