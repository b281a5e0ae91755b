"""A federated cell's examples per second against centralized training on the same examples; prints JSON.

    python -m simulations.bench_cell_speed --data-dir ../shared/glue [--task sst2] [--examples 1000] [--epochs 3] \
        [--batch-size 8]

In one run of this script, one after another, with the machine otherwise idle:
- `fedrp train` (centralized): `examples` training examples for `epochs` epochs, then the dev set;
- `simulations.run --engine inprocess`: the same examples over 10 IID clients, every client in
  every round, `epochs` rounds of one local epoch (so the same number of example passes), the
  server evaluating the dev set after the last round only;
- `simulations.run --engine flower`: the same federation through Flower's simulation engine (Ray).
Each is a fresh process, timed from its start to its exit. `train` compares training: the loop's
own clock, centralized, against the sum of the round times, federated (which also holds the one
dev evaluation after the last round, so it favours centralized); `end_to_end` compares whole
processes: imports, model build, data, training, evaluation. Both sides train in batches of
--batch-size (default: the federated clients' default without DP, fedrp.rates.FEDERATED_BATCH_SIZE),
so the ratio measures what the federation costs, not what a batch size does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from fedrp.rates import FEDERATED_BATCH_SIZE
from simulations.bench_options import add_data_dir, machine, report

TARGET = 0.8  # federated examples per second over centralized, at least


def timed(cmd: list[str]) -> tuple[dict, float]:
    """A command's last JSON line and its wall time from start to exit."""
    print("running", " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1]), time.perf_counter() - start


def centralized(args, scratch: str) -> dict:
    result, wall = timed([sys.executable, "-m", "fedrp", "train", "--json", f"--task={args.task}", "--method=slash",
                          f"--data-dir={args.data_dir}", f"--max-train-samples={args.examples}",
                          f"--epochs={args.epochs}", "--schedule=constant", f"--batch-size={args.batch_size}",
                          f"--out={scratch}"])
    passes = result["train_examples"] * args.epochs
    return {"examples_per_second_train": result["samples_per_second"], "examples_per_second_end_to_end": passes / wall,
            "wall_seconds": wall, "train_seconds": result["train_seconds"], "metrics": result["metrics"]}


def federated(args, scratch: str, engine: str) -> dict:
    rounds = int(args.epochs)
    result, wall = timed([
        sys.executable, "-m", "simulations.run", "--json", f"--engine={engine}", "--num-supernodes=10",
        f"--task={args.task}", "--method=slash", f"--data-dir={args.data_dir}", f"--max-train-samples={args.examples}",
        "--max-train-samples-per-client=0", "--partition-scheme=iid", "--fraction-train=1.0",
        "--fraction-evaluate=0.0", f"--num-server-rounds={rounds}", f"--eval-every={rounds}",
        f"--batch-size={args.batch_size}",
        f"--store={scratch}/{engine}.sqlite", f"--checkpoint-dir={scratch}/ckpt-{engine}"])
    trained = [r for r in result["rounds"] if r["round"] > 0]
    passes = args.examples * rounds
    round_seconds = sum(r["wall_seconds"] for r in trained)  # the last one includes the dev evaluation: conservative
    return {"examples_per_second_train": passes / round_seconds, "examples_per_second_end_to_end": passes / wall,
            "wall_seconds": wall, "round_seconds": [round(r["wall_seconds"], 2) for r in trained],
            "metrics": result["final_metrics"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=FEDERATED_BATCH_SIZE, help="both sides' batches")
    parser.add_argument("--engines", nargs="+", default=["inprocess", "flower"], choices=["inprocess", "flower"])
    args = parser.parse_args(argv)
    host = machine()  # before the work: whether other jobs shared the cores
    if args.examples < 10 or args.epochs < 2 or args.batch_size < 1:
        parser.error("expected --examples of at least 10 (one per client), --epochs of at least 2 and a positive "
                     "--batch-size")
    args.data_dir = os.path.abspath(args.data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        out = {"task": args.task, "examples": args.examples, "epochs": args.epochs, "batch_size": args.batch_size,
               "target": TARGET,
               "centralized": centralized(args, scratch)}
        for engine in args.engines:
            out[engine] = federated(args, scratch, engine)
    base = out["centralized"]
    for engine in args.engines:
        out[engine]["ratio"] = {k: round(out[engine][f"examples_per_second_{k}"] / base[f"examples_per_second_{k}"], 3)
                                for k in ("train", "end_to_end")}
        out[engine]["met"] = out[engine]["ratio"]["end_to_end"] >= TARGET
    report(out, host)


if __name__ == "__main__":
    main()
