"""The federation benchmark: slash vs. lora vs. full through the same server, printed as one JSON object.

    python -m simulations.bench_federation --data-dir ../shared/glue

The 4,000 SST-2 training examples of `bench_glue --suite sst2` are split over 10 clients by
Dirichlet label skew (alpha 0.1 and 1.0); 20 rounds sample half of the clients each. Every
cell is one `python -m simulations.run` process (the same ServerApp and ClientApp as
`flwr run .`); finished cells are appended to --cache (simulations.harness.cells: keyed by settings and
code version) and skipped when asked for again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key, condense, run_federation

METHODS = ("slash", "lora", "full")
ALPHAS = (0.1, 1.0)
# Centralized full finetuning on the same 4,000 examples, one epoch, bf16 autocast:
# `python -m simulations.bench_glue --suite sst2` (docs/guide/results.md).
CENTRALIZED_FULL_ACCURACY = 0.830
TARGETS = {"slash_accuracy_vs_centralized_full_min": 0.95, "bytes_full_over_slash_min": 10_000,
           "bytes_lora_over_slash_min": 30}


def common_options(data_dir: str, rounds: int, lr_decay: str, cache: Path) -> dict:
    """The setting every federated benchmark cell shares (SST-2, 4,000 examples, 10 Dirichlet clients)."""
    return {
        "data-dir": os.path.abspath(data_dir), "task": "sst2", "num-supernodes": 10, "num-server-rounds": rounds,
        "fraction-train": 0.5, "fraction-evaluate": 0.0, "max-train-samples": 4000,
        "max-train-samples-per-client": 0, "partition-scheme": "dirichlet", "lr-decay": lr_decay,
        "store": str(cache.with_suffix(".sqlite")), "checkpoint-dir": str(cache.parent / "bench_federation_ckpt"),
    }


def summarize(cells: list[dict], reference: float) -> dict:
    """Per alpha and decay: slash against centralized full finetuning, and the bytes each method sends."""
    out = {}
    for c in (c for c in cells if c["method"] == "slash"):
        same_alpha = {o["method"]: o for o in cells if o["alpha"] == c["alpha"]}
        row = {"slash_final_vs_centralized_full": c["final_accuracy"] / reference}
        for other in ("full", "lora"):
            if other in same_alpha:
                row[f"bytes_{other}_over_slash"] = same_alpha[other]["bytes_up_per_client"][0] / c["bytes_up_per_client"][0]
        row["met"] = {
            "accuracy": row["slash_final_vs_centralized_full"] >= TARGETS["slash_accuracy_vs_centralized_full_min"],
            **{f"bytes_{o}": row[f"bytes_{o}_over_slash"] >= TARGETS[f"bytes_{o}_over_slash_min"]
               for o in ("full", "lora") if f"bytes_{o}_over_slash" in row},
        }
        out[f"alpha={c['alpha']:g}, lr-decay={c['lr-decay']}"] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lr-decay", choices=["none", "cosine"], default="none", help="the clients' rate over rounds")
    parser.add_argument("--reference", type=float, default=CENTRALIZED_FULL_ACCURACY,
                        help="centralized full-finetuning accuracy on the same 4,000 examples")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_federation.jsonl"))
    args = parser.parse_args(argv)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    common = common_options(args.data_dir, args.rounds, args.lr_decay, args.cache)
    done = CellCache(args.cache)
    cells = []
    for alpha in args.alphas:
        for method in args.methods:
            cell = {"method": method, "alpha": alpha}
            key = cell_key("federated", {**common, **cell})
            cells.append(done.get_or_run(key, lambda cell=cell: condense({**cell, "lr-decay": args.lr_decay},
                                                                         run_federation({**common, **cell}))))
    json.dump({"targets": TARGETS, "reference_centralized_full": args.reference,
               "summary": summarize(cells, args.reference), "cells": cells}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
