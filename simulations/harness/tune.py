"""Choose federated settings on a validation split carved from the training data; prints JSON.

    python -m simulations.harness.tune --task sst2 --vary lr=0.01,0.03 --vary lr-decay=none,cosine \\
        --set alpha=0.5 --set num-server-rounds=10

Every combination of the --vary values runs as one federation through the in-process engine
(the same apps as Flower's, simulations.inprocess) with `validation-samples` held out of the
training set: the server evaluates on those, never on dev. The score of a run is the mean of
the task's official metric over its last three evaluations, so a setting that ends on a lucky
swing does not win. Finished runs are appended to --cache, keyed by their settings and the code
version, and skipped when asked for again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

from fedrp import glue
from fedrp.federation import FedConfig
from simulations.bench_options import add_data_dir
from simulations.harness.cells import CellCache, cell_key, condense, run_federation

LAST = 3  # evaluations averaged into a run's score


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    """KEY=VALUE strings as a dict; a key must be a run-config key or num-supernodes."""
    known = set(FedConfig().to_run_config()) | {"num-supernodes"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise ValueError(f"{what} {item!r}: expected KEY=VALUE with KEY a run-config key")
        out[key] = value
    return out


def combinations(vary: dict[str, str]) -> list[dict[str, str]]:
    """Every combination of the comma-separated values, in the order given."""
    keys = list(vary)
    return [dict(zip(keys, values)) for values in itertools.product(*(vary[k].split(",") for k in keys))]


def score(row: dict, metric: str) -> float:
    """Mean of the official metric over the run's last LAST evaluated rounds."""
    values = [m[metric] for m in row["metrics"] if metric in m][-LAST:]
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--method", default="slash")
    add_data_dir(parser)
    parser.add_argument("--validation-samples", type=int, default=1000)
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2", help="values to compare")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed run-config values")
    parser.add_argument("--cache", type=Path, default=Path("docs/results/tuning.jsonl"))
    args = parser.parse_args(argv)
    try:
        task = glue.get_task(args.task)
        vary, fixed = parse_pairs(args.vary, "--vary"), parse_pairs(args.set, "--set")
        runs = combinations(vary)
        for combo in runs:  # refuse a bad value now, not after the first runs
            FedConfig.from_run_config({}, {k: v for k, v in {**fixed, **combo}.items() if k != "num-supernodes"})
    except ValueError as err:
        parser.error(str(err))
    scratch = Path("runs/tune")
    scratch.mkdir(parents=True, exist_ok=True)
    common = {"data-dir": os.path.abspath(args.data_dir), "store": str((scratch / "tune.sqlite").resolve()),
              "checkpoint-dir": str((scratch / "ckpt").resolve()), "engine": "inprocess", "fraction-evaluate": 0.0}
    done, rows = CellCache(args.cache), []
    metric = task.metrics[0]
    for combo in runs:
        options = {"task": task.name, "method": args.method, "validation-samples": args.validation_samples,
                   **fixed, **combo}
        key = cell_key("federated", {**common, **options})
        row = done.get_or_run(key, lambda options=options: condense({"settings": options},  # the key holds the code version
                                                                    run_federation({**common, **options})))
        rows.append({"settings": combo, "score": round(score(row, metric), 4),
                     "validation": [round(m[metric], 4) for m in row["metrics"] if metric in m],
                     "seconds": round(sum(row["wall_seconds"]), 1)})
        print(f"{combo}: {metric} {rows[-1]['score']:.4f} over the last {LAST} evaluations", file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["score"])
    out = {"task": task.name, "method": args.method, "metric": metric, "fixed": fixed,
           "validation_samples": args.validation_samples, "runs": rows, "chosen": best["settings"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
