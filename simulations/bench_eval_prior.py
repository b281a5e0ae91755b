"""A tuning run's checkpoints re-evaluated on its held-out examples, with and without the federation's label
prior added to the logits (FedConfig.eval_prior); prints JSON lines, one per checkpointed round.

    python -m simulations.bench_eval_prior --store runs/tune/tune.sqlite --run 5 --rounds 5,10,15,20

Training is the same either way, so the checkpoints of one run answer the question without training
again. Only runs with validation-samples are accepted: settings are chosen on held-out training
examples, never on dev. The prior is the one the clients would report: their partitions' label counts,
summed (fedrp.federation.federation_offsets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from fedrp import glue
from fedrp.federation import FedConfig, client_train_data, federation_offsets, label_counts, model_for, server_evaluate
from server import checkpoint
from server.store import RunStore


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the run store of the tuning run")
    parser.add_argument("--run", type=int, required=True, help="its run id")
    parser.add_argument("--rounds", default="", help="checkpointed rounds to evaluate, comma-separated (default: all)")
    parser.add_argument("--num-supernodes", type=int, default=10, help="the run's clients (one partition each)")
    args = parser.parse_args(argv)
    try:
        if not Path(args.store).is_file():
            raise ValueError(f"no run store at {args.store}: expected the SQLite file of a tuning run")
        cfg = FedConfig.from_run_config(json.loads(RunStore(args.store).run(args.run)["config"]))
        if not cfg.validation_samples:
            raise ValueError(f"run {args.run} evaluated on dev (validation-samples 0): expected a tuning run")
        if glue.get_task(cfg.task).is_regression:
            raise ValueError(f"{cfg.task} is a regression task: it has no label prior")
        rounds = [int(r) for r in args.rounds.split(",") if r]
    except ValueError as err:
        print(f"simulations.bench_eval_prior: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    folder = Path(cfg.checkpoint_dir) / f"run-{args.run}"
    model = model_for(cfg)
    num_labels = glue.get_task(cfg.task).num_labels
    counts = [label_counts(client_train_data(cfg, model.tokenizer, pid, args.num_supernodes)["label"], num_labels)
              for pid in range(args.num_supernodes)]
    offsets = federation_offsets(counts)
    rows = []
    for rnd in rounds or range(1, cfg.num_server_rounds + 1):
        path = folder / f"round-{rnd:04d}.safetensors"
        if not path.is_file():
            continue
        _, state, _, _ = checkpoint.load(path)
        row = {"run": args.run, "task": cfg.task, "round": rnd, "prior": np.exp(offsets).round(3).tolist(),
               "plain": server_evaluate(cfg, model, state), "prior_added": server_evaluate(cfg, model, state, offsets)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
