"""User-level DP at scale: DP-FedAvg over 100 simulated clients, 30 a round; accuracy against the federation's epsilon.

    python -m simulations.bench_client_dp --data-dir ../shared/glue

The 4,000 SST-2 examples of the other benchmarks are split over 100 Dirichlet(1.0) clients of
about 40 examples (36 while 400 training examples are held out for choosing the clip); each
round samples 30 of them (fraction-train 0.3). The server clips every client's whole update to
client-dp-clip, averages, and adds Gaussian noise of client-dp-noise x clip / 30 (server.rounds,
fedrp.privacy.client_level); the RDP accountant gives epsilon for the whole federation at
delta 1e-5 after the last round. The clipping norm is chosen at noise 1.0 on the 400 held-out
training examples; then each noise multiplier runs once on the full dev set at that norm.
Every cell is one `python -m simulations.run` (in-process engine: the same apps as Flower's
simulation); finished cells are appended to --cache and skipped when asked for again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simulations.bench_federation import common_options
from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key, condense, run_federation

CLIPS = (0.5, 2.0)  # candidate client-dp-clip, compared at SELECT_NOISE on held-out examples
SELECT_NOISE = 1.0
NOISES = (0.0, 0.5, 1.0, 2.0)  # 0: no client-level DP, the same federation otherwise


def options(data_dir: str, rounds: int) -> dict:
    """bench_federation's SST-2 setting, spread over 100 clients, 30 a round, through the in-process engine."""
    scratch = Path("runs").resolve()
    return {**common_options(data_dir, rounds, "cosine", scratch / "bench_client_dp.jsonl"),
            "checkpoint-dir": str(scratch / "bench_client_dp_ckpt"), "engine": "inprocess", "num-supernodes": 100,
            "fraction-train": 0.3, "min-train-nodes": 30, "alpha": 1.0, "min-partition-size": 10, "eval-every": 5}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cache", type=Path, default=Path("docs/results/bench_client_dp.jsonl"))
    args = parser.parse_args(argv)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    Path("runs").mkdir(exist_ok=True)
    common, done = options(args.data_dir, args.rounds), CellCache(args.cache)

    def cell(extra: dict) -> dict:
        def compute() -> dict:
            result = run_federation({**common, **extra})
            return {**condense(extra, result), "client_dp_epsilon": result.get("client_dp_epsilon")}

        return done.get_or_run(cell_key("federated", {**common, **extra}), compute)

    selection = [cell({"client-dp-noise": SELECT_NOISE, "client-dp-clip": c, "validation-samples": 400}) for c in CLIPS]
    clip = max(selection, key=lambda r: r["final_accuracy"])["client-dp-clip"]  # never chosen on dev
    runs = [cell({"client-dp-noise": n, "client-dp-clip": clip}) for n in NOISES]  # on dev, each once
    json.dump({"clip": clip, "selection": {r["client-dp-clip"]: r["final_accuracy"] for r in selection},
               "accuracy_by_epsilon": [{"noise": r["client-dp-noise"], "epsilon": r["client_dp_epsilon"],
                                        "final_accuracy": r["final_accuracy"], "best_accuracy": r["best_accuracy"]}
                                       for r in runs], "cells": runs}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
