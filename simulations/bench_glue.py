"""Centralized GLUE runs of every method in the shared loop, printed as one JSON object.

    python -m simulations.bench_glue                       # SST-2 4,000 + MRPC, RTE, CoLA full
    python -m simulations.bench_glue --suite sst2          # only the SST-2 comparison
    python -m simulations.bench_glue --suite sweep         # the learning-rate sweep behind the centralized rates (fedrp.rates)

Each finished cell is appended to --cache (JSON lines) and skipped when the same cell is asked
for again, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datasets
import transformers

from fedrp.centralized import RunConfig, run
from fedrp.spec import BF16_MODES
from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key

SST2_METHODS = ("head", "slash", "jrwarp", "lora", "full")
TARGETS = {"slash_accuracy_vs_full_min": 0.95, "slash_throughput_vs_full_min": 1.8}
SWEEP = {
    "slash": (1e-2, 3e-2, 1e-1), "jrwarp": (3e-3, 1e-2, 3e-2), "head": (3e-3, 1e-2, 3e-2, 1e-1),
    "full": (3e-5, 1e-4, 3e-4, 1e-3), "lora": (3e-4, 1e-3, 3e-3, 1e-2), "bitfit": (3e-4, 1e-3, 3e-3, 1e-2),
}


def cells(suite: str) -> list[dict]:
    if suite == "sweep":
        return [dict(task="sst2", method=m, lr=lr, max_train_samples=1000) for m, lrs in SWEEP.items() for lr in lrs]
    out = [dict(task="sst2", method=m, max_train_samples=4000) for m in SST2_METHODS]
    out.append(dict(task="sst2", method="full", lr=1e-4, max_train_samples=4000))  # the reference at a gentler lr too
    if suite == "all":
        out += [dict(task=t, method=m) for t in ("mrpc", "rte", "cola") for m in SST2_METHODS]
    return out


def run_cells(todo: list[dict], common: dict, cache: Path) -> list[dict]:
    """Each centralized cell the cache (simulations.harness.cells: settings and code version) lacks, then all of them."""
    done = CellCache(cache)
    results = []
    for cell in todo:
        key = cell_key("reference", {**cell, **{k: v for k, v in common.items() if k != "data_dir"}})
        results.append(done.get_or_run(key, lambda cell=cell: run(RunConfig(**cell, **common, out=None, progress=False))))
    return results


def summarize_sst2(results: list[dict]) -> dict:
    sst2 = [r for r in results if r["task"] == "sst2" and r["train_examples"] == 4000]
    slash = [r for r in sst2 if r["method"] == "slash"]
    full = [r for r in sst2 if r["method"] == "full"]
    if not (slash and full):
        return {}
    slash, full = slash[0], max(full, key=lambda r: r["metrics"]["accuracy"])  # the stronger reference
    acc = slash["metrics"]["accuracy"] / full["metrics"]["accuracy"]
    speed = slash["samples_per_second"] / full["samples_per_second"]
    return {"slash_accuracy_vs_full": acc, "slash_throughput_vs_full": speed, "full_lr": full["lr"],
            "met": {"accuracy": acc >= TARGETS["slash_accuracy_vs_full_min"],
                    "throughput": speed >= TARGETS["slash_throughput_vs_full_min"]}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["all", "sst2", "sweep"], default="all")
    add_data_dir(parser)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--bf16", choices=BF16_MODES, default="auto")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_glue.jsonl"))
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    common = {"data_dir": args.data_dir, "epochs": args.epochs, "bf16": args.bf16}
    results = run_cells(cells(args.suite), common, args.cache)
    keep = ("task", "method", "metrics", "params", "bytes_fp32", "samples_per_second", "wall_seconds",
            "train_examples", "eval_examples", "lr", "epochs", "bf16", "final_loss")
    out = {"suite": args.suite, "targets": TARGETS, "summary": summarize_sst2(results),
           "runs": [{k: r[k] for k in keep} for r in results]}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
