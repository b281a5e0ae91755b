"""The cost of secure aggregation: slash federated in the clear vs. through SecAgg+, printed as one JSON object.

    python -m simulations.bench_secagg --data-dir ../shared/glue

The federation benchmark's setting (4,000 SST-2 examples, 10 Dirichlet(1.0) clients, 20
rounds, half sampled per round) with SecAgg+ at Flower's ranges (clipping 8, 2^22 levels),
with coarse quantisation (2^8 levels) and with a tight clipping range (0.05). Cells share
bench_federation's cache, so its plain slash cell is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simulations.bench_federation import common_options
from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key, condense, run_federation

CELLS = (
    {},  # in the clear: the federation benchmark's cell
    {"secure-aggregation": "secagg+"},
    {"secure-aggregation": "secagg+", "secagg-quantization": 2**8},
    {"secure-aggregation": "secagg+", "secagg-clip": 0.05},
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_federation.jsonl"))
    args = parser.parse_args(argv)
    common = common_options(args.data_dir, 20, "none", args.cache)
    done = CellCache(args.cache)
    rows = []
    for extra in CELLS:
        cell = {"method": "slash", "alpha": 1.0, **extra}
        key = cell_key("federated", {**common, **cell})
        row = done.get_or_run(key, lambda cell=cell: condense({**cell, "lr-decay": "none"}, run_federation({**common, **cell})))
        rows.append({"secure-aggregation": "none", **row})
    clear = rows[0]["final_accuracy"]
    summary = {json.dumps({k: v for k, v in r.items() if k.startswith("secagg") or k == "secure-aggregation"}):
               {"final_accuracy": r["final_accuracy"], "points_vs_clear": 100 * (r["final_accuracy"] - clear),
                "mean_seconds_per_round": sum(r["wall_seconds"]) / len(r["wall_seconds"])} for r in rows}
    json.dump({"summary": summary, "cells": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
