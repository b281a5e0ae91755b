"""The privacy benchmark: accuracy with and without sample-level DP, centralized and federated, as one JSON object.

    python -m simulations.bench_privacy --data-dir ../shared/glue [--no-federated] [--no-centralized]

Centralized, on equal terms: slash and LoRA on the 4,000 SST-2 examples of the earlier benchmarks.
Each method's schedule (rate, batch size, epochs, clipping norm) is chosen at epsilon 8 among a
few candidates on 400 held-out training examples (`fedrp train --validation-samples`, the examples a
federation holds out), never on dev; then the method runs once per epsilon (0, 3, 8) on dev at
that same schedule, so private and non-private runs differ only by DP. Since a rate without clipping
is a larger step, each method also gets a non-private reference at its own schedule, chosen the same
way among the same rates, batches and epochs without DP; the target (epsilon 8 within 5 points of no
DP) is read against it. Federated: slash over 10
Dirichlet clients (alpha 1.0, and 0.1), 20 rounds, the run config's defaults (its DP recipe
included), each client's budget epsilon 8 (and 3) over the run, against the same run without
DP; through the in-process engine (the same apps as Flower's simulation).
Finished cells are appended to --cache and skipped when asked for again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

import datasets
import transformers

from fedrp.centralized import RunConfig, run
from fedrp.privacy.config import PrivacyConfig
from fedrp.spec import BF16_MODES
from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key, condense, run_federation

METHODS = ("slash", "lora")
EPSILONS = (0.0, 3.0, 8.0)  # 0: no DP
VALIDATION = 400  # held-out training examples on which each method's schedule is chosen
CHOSEN_AT = 8.0  # the epsilon at which schedules are compared; every epsilon then runs the chosen one
# Candidate schedules per method; DP likes larger batches (less noise per step), so each rate is
# tried at batch 32 for one epoch and at batch 128 for three (the same number of steps' worth of noise).
TRIED_RATES = {"slash": (3e-2, 1e-1), "lora": (1e-2, 3e-2)}
SCHEDULES = ((32, 1.0), (128, 3.0))  # (batch size, epochs)
CANDIDATES = {method: [dict(lr=lr, batch_size=b, epochs=e, max_grad_norm=c)
                       for lr in rates for b, e in SCHEDULES for c in (0.1, 1.0)]
              for method, rates in TRIED_RATES.items()}
# Without DP a rate means something else (no clipping shrinks the steps), so each method's non-private
# reference gets its own schedule, chosen the same way among the same rates, batches and epochs.
NONPRIVATE_CANDIDATES = {method: [dict(lr=lr, batch_size=b, epochs=e) for lr in rates for b, e in SCHEDULES]
                         for method, rates in TRIED_RATES.items()}
# Federated cells: (epsilon, alpha, run-config options). Under DP the run config's defaults are the recipe
# chosen on held-out training examples (AdamW at slash's DP rate, batches of 32: docs/guide/privacy.md); the
# run without DP trains in the same batches, so the two differ by DP and DP's rate.
FEDERATED_VARIANTS = [(0.0, 1.0, {"batch-size": 32}), (8.0, 1.0, {}), (3.0, 1.0, {}), (8.0, 0.1, {})]
TARGETS = {"slash_eps8_points_below_nonprivate_max": 5.0, "slash_eps8_ahead_of_lora_eps8": True,
           "slash_eps3_ahead_of_lora_eps3": True}


def centralized(method: str, epsilon: float, data_dir: str, bf16: str, lr: float, max_grad_norm: float = 1.0,
                batch_size: int = 32, epochs: float = 1.0, validation_samples: int = 0) -> dict:
    """One `fedrp train` run; on dev, or with validation_samples on that many held-out training examples."""
    privacy = PrivacyConfig(epsilon=epsilon, max_grad_norm=max_grad_norm) if epsilon else None
    cfg = RunConfig(task="sst2", method=method, data_dir=data_dir, max_train_samples=4000, bf16=bf16, out=None,
                    progress=False, privacy=privacy, lr=lr, batch_size=batch_size, epochs=epochs,
                    validation_samples=validation_samples)
    r = run(cfg)
    return {"setting": "centralized", "method": method, "epsilon_target": epsilon, "accuracy": r["metrics"]["accuracy"],
            "evaluated_on": r["evaluated_on"], "samples_per_second": r["samples_per_second"],
            "privacy": r.get("privacy"), "lr": r["lr"], "batch_size": batch_size, "epochs": epochs,
            "max_grad_norm": max_grad_norm if epsilon else None}


def federated(epsilon: float, alpha: float, data_dir: str, **options) -> dict:
    from simulations.bench_federation import common_options

    scratch = Path("runs").resolve()  # the run store and checkpoints; the cells' cache is in docs/results
    scratch.mkdir(exist_ok=True)
    common = {**common_options(data_dir, 20, "cosine", scratch / "bench_privacy.jsonl"), "dp-epsilon": epsilon,
              "engine": "inprocess", "checkpoint-dir": str(scratch / "bench_privacy_ckpt")}
    result = run_federation({**common, "method": "slash", "alpha": alpha, **options})
    row = condense({"method": "slash", "alpha": alpha, "lr-decay": "cosine"}, result)
    return {"setting": "federated", "method": "slash", "epsilon_target": epsilon, "alpha": alpha,
            "accuracy": row["final_accuracy"], "best_accuracy": row["best_accuracy"],
            "accuracy_per_round": row["accuracy"], "options": options, "epsilon_spent": result.get("epsilon_spent", {})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--bf16", choices=BF16_MODES, default="off")
    parser.add_argument("--no-federated", action="store_true", help="skip the federated cells")
    parser.add_argument("--no-centralized", action="store_true", help="skip the centralized cells")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="the centralized methods to run (the summary compares those cached)")
    parser.add_argument("--cache", type=Path, default=Path("docs/results/bench_privacy.jsonl"))
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir)
    done = CellCache(args.cache)

    def cell(setting: str, method: str, epsilon: float, hyper: dict, compute) -> dict:
        kind = "federated" if setting == "federated" else "reference"
        key = cell_key(kind, {"setting": setting, "method": method, "epsilon": epsilon, "bf16": args.bf16, **hyper})
        return done.get_or_run(key, compute)

    rows = []
    for method in () if args.no_centralized else args.methods:
        select = partial(centralized, method, CHOSEN_AT, data_dir, args.bf16, validation_samples=VALIDATION)
        scored = [cell("select", method, CHOSEN_AT, {**h, "validation": VALIDATION},
                       lambda h=h, select=select: {**select(**h), "setting": "select"}) for h in CANDIDATES[method]]
        rows += scored
        best = max(scored, key=lambda r: r["accuracy"])  # on held-out training examples, never dev
        schedule = {k: best[k] for k in ("lr", "batch_size", "epochs")}
        for epsilon in EPSILONS:  # each once, on dev, at the chosen schedule
            hyper = {**schedule, "max_grad_norm": best["max_grad_norm"]} if epsilon else schedule
            rows.append(cell("centralized", method, epsilon, hyper,
                             partial(centralized, method, epsilon, data_dir, args.bf16, **hyper)))
        plain = partial(centralized, method, 0.0, data_dir, args.bf16)
        scored = [cell("select-nonprivate", method, 0.0, {**h, "validation": VALIDATION},
                       lambda h=h, plain=plain: {**plain(**h, validation_samples=VALIDATION),
                                                 "setting": "select-nonprivate"})
                  for h in NONPRIVATE_CANDIDATES[method]]
        rows += scored
        own = {k: max(scored, key=lambda r: r["accuracy"])[k] for k in ("lr", "batch_size", "epochs")}
        rows.append(cell("nonprivate", method, 0.0, own,
                         lambda own=own, plain=plain: {**plain(**own), "setting": "nonprivate"}))
    for epsilon, alpha, options in () if args.no_federated else FEDERATED_VARIANTS:
        rows.append(cell("federated", "slash", epsilon, {"alpha": alpha, **options},
                         partial(federated, epsilon, alpha, data_dir, **options)))
    json.dump({"targets": TARGETS, "summary": summarize(rows), "rows": rows}, sys.stdout, indent=1)
    print()


def summarize(rows: list[dict]) -> dict:
    """The targets' figures: dev accuracy at equal schedules, and each method's chosen schedule."""
    dev = {(r["method"], r["epsilon_target"]): r for r in rows if r["setting"] == "centralized"}
    out = {}
    for method in METHODS:
        chosen = dev.get((method, CHOSEN_AT))
        if chosen:
            picks = [r for r in rows if r["setting"] == "select" and r["method"] == method]
            out[f"{method}_schedule"] = {k: chosen[k] for k in ("lr", "batch_size", "epochs", "max_grad_norm")} | {
                "validation_accuracy": max(r["accuracy"] for r in picks), "candidates": len(picks)}
        for epsilon in EPSILONS:
            if (method, epsilon) in dev:
                out[f"{method}_eps{epsilon:g}_dev"] = dev[(method, epsilon)]["accuracy"]
    tuned = {r["method"]: r for r in rows if r["setting"] == "nonprivate"}
    for method in METHODS:
        if method in tuned:
            out[f"{method}_nonprivate_own_schedule"] = {k: tuned[method][k] for k in ("lr", "batch_size", "epochs")}
            out[f"{method}_nonprivate_own_schedule_dev"] = tuned[method]["accuracy"]
    plain, private = dev.get(("slash", 0.0)), dev.get(("slash", 8.0))
    if plain and private:
        out["slash_eps8_points_below_nonprivate_same_schedule"] = 100 * (plain["accuracy"] - private["accuracy"])
        out["dp_throughput_cost_slash"] = private["samples_per_second"] / plain["samples_per_second"]
    if "slash" in tuned and private:  # the target: against non-private slash at its own best schedule
        out["slash_eps8_points_below_nonprivate"] = 100 * (tuned["slash"]["accuracy"] - private["accuracy"])
    for epsilon in (8.0, 3.0):
        if ("slash", epsilon) in dev and ("lora", epsilon) in dev:
            out[f"slash_eps{epsilon:g}_ahead_of_lora_eps{epsilon:g}"] = \
                dev[("slash", epsilon)]["accuracy"] > dev[("lora", epsilon)]["accuracy"]
    for r in rows:
        if r["setting"] == "federated":
            name = f"federated_slash_alpha{r['alpha']:g}_eps{r['epsilon_target']:g} {json.dumps(r.get('options', {}))}"
            out[name] = r["accuracy"]
    return out


if __name__ == "__main__":
    main()
