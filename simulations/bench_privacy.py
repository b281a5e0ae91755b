"""The privacy benchmark: accuracy and throughput without DP and at epsilon 1, 3, 8, printed as one JSON object.

    python -m simulations.bench_privacy --data-dir ../shared/glue

Centralized: slash, head and lora on the 4,000 SST-2 examples of the earlier benchmarks, one
epoch, full dev set, sample-level DP-SGD (delta 1/(2n), clipping norm 1). Federated: slash
over 10 Dirichlet(1.0) clients, 20 rounds, each client's budget epsilon 8 over the run.
Finished cells are appended to --cache and skipped when asked for again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import datasets
import transformers

from fedrp.centralized import RunConfig, run
from fedrp.privacy.config import PrivacyConfig

METHODS = ("slash", "head", "lora")
EPSILONS = (0.0, 1.0, 3.0, 8.0)  # 0: no DP
TARGETS = {"slash_eps8_points_below_nonprivate_max": 5.0, "slash_eps8_ahead_of_lora_eps8": True}


def centralized(method: str, epsilon: float, data_dir: str, bf16: str) -> dict:
    cfg = RunConfig(task="sst2", method=method, data_dir=data_dir, max_train_samples=4000, bf16=bf16, out=None,
                    progress=False, privacy=PrivacyConfig(epsilon=epsilon) if epsilon else None)
    r = run(cfg)
    return {"setting": "centralized", "method": method, "epsilon_target": epsilon, "accuracy": r["metrics"]["accuracy"],
            "samples_per_second": r["samples_per_second"], "privacy": r.get("privacy"), "lr": r["lr"]}


def federated(epsilon: float, data_dir: str, cache: Path) -> dict:
    from simulations.bench_federation import condense, run_cell

    common = {"data-dir": data_dir, "task": "sst2", "num-supernodes": 10, "num-server-rounds": 20,
              "fraction-train": 0.5, "fraction-evaluate": 0.0, "max-train-samples": 4000,
              "max-train-samples-per-client": 0, "partition-scheme": "dirichlet", "dp-epsilon": epsilon,
              "store": str(cache.with_suffix(".sqlite")), "checkpoint-dir": str(cache.parent / "bench_privacy_ckpt")}
    result = run_cell({"method": "slash", "alpha": 1.0}, common)
    row = condense({"method": "slash", "alpha": 1.0, "lr-decay": "none"}, result)
    return {"setting": "federated", "method": "slash", "epsilon_target": epsilon, "accuracy": row["final_accuracy"],
            "accuracy_per_round": row["accuracy"], "epsilon_spent": result.get("epsilon_spent", {})}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDRP_GLUE_DIR", "../shared/glue"))
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="off")
    parser.add_argument("--no-federated", action="store_true", help="skip the federated cell")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_privacy.jsonl"))
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    data_dir = os.path.abspath(args.data_dir)
    done = {}
    if args.cache.is_file():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row["row"]
    todo = [("centralized", m, e) for m in METHODS for e in EPSILONS]
    if not args.no_federated:
        todo += [("federated", "slash", 8.0)]
    rows = []
    for setting, method, epsilon in todo:
        key = json.dumps([setting, method, epsilon, args.bf16])
        if key not in done:
            print(f"running {key}", file=sys.stderr, flush=True)
            done[key] = (centralized(method, epsilon, data_dir, args.bf16) if setting == "centralized"
                         else federated(epsilon, data_dir, args.cache))
            with args.cache.open("a") as f:
                f.write(json.dumps({"key": key, "row": done[key]}) + "\n")
        rows.append(done[key])
    json.dump({"targets": TARGETS, "summary": summarize(rows), "rows": rows}, sys.stdout, indent=1)
    print()


def summarize(rows: list[dict]) -> dict:
    acc = {(r["setting"], r["method"], r["epsilon_target"]): r for r in rows}
    out = {}
    plain, private = acc.get(("centralized", "slash", 0.0)), acc.get(("centralized", "slash", 8.0))
    lora = acc.get(("centralized", "lora", 8.0))
    if plain and private:
        out["slash_eps8_points_below_nonprivate"] = 100 * (plain["accuracy"] - private["accuracy"])
        out["dp_throughput_cost_slash"] = private["samples_per_second"] / plain["samples_per_second"]
    if private and lora:
        out["slash_eps8_ahead_of_lora_eps8"] = private["accuracy"] > lora["accuracy"]
    return out


if __name__ == "__main__":
    main()
