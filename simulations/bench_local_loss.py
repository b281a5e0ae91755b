"""Federated rounds without Flower, for quick comparisons of local-training settings; prints JSON.

    python -m simulations.bench_local_loss --alpha 1.0 --lr 0.01 --local-loss ce --rounds 5
    python -m simulations.bench_local_loss --set dp-epsilon=8 --set dp-max-grad-norm=5 [--noise-multiplier 0.01]

Samples clients and averages their replies by examples with the server's rule (Flower's FedAvg), but in one
process on one thread, so settings can be compared side by side in minutes. The figures on
local learning rates, the logit-adjusted loss and federated DP's clipping in docs/guide/
(federation.md, privacy.md) come from it. With dp-epsilon, each client keeps its budget across rounds as deployed clients do;
--noise-multiplier instead fixes the noise, outside any budget, to tell clipping from noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import torch
import transformers
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedrp.federation import (
    FedConfig,
    client_train_data,
    initial_state,
    local_train,
    local_train_config,
    model_for,
    server_evaluate,
)
from fedrp.federation.config import sample_partitions
from fedrp.payload import load_trainable_state, trainable_state
from fedrp.privacy.budget import ClientBudget
from fedrp.privacy.engine import train_private
from fedrp.train import select_device
from server.strategy import from_record, to_record
from simulations.bench_options import add_data_dir


def fixed_noise_round(cfg: FedConfig, state: dict, train_data, rnd: int, pid: int, noise: float) -> dict:
    """A client's DP-SGD round at a given noise multiplier, spending no budget: a diagnostic only."""
    model = model_for(cfg)
    load_trainable_state(model, state)
    privacy = dataclasses.replace(cfg.privacy, noise_multiplier=noise)
    train_private(model, train_data, local_train_config(cfg, train_data, rnd, pid), privacy, select_device("cpu"))
    return trainable_state(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--local-loss", default="logit-adjusted")
    parser.add_argument("--lr-decay", default="none")
    parser.add_argument("--bf16", default="off")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-eval-samples", type=int, default=400)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other run-config key")
    parser.add_argument("--noise-multiplier", type=float, default=None, help="with dp-epsilon: fixed DP-SGD noise")
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    cfg = FedConfig.from_run_config({
        "data-dir": args.data_dir, "alpha": args.alpha, "lr": args.lr, "local-loss": args.local_loss,
        "lr-decay": args.lr_decay, "num-server-rounds": args.rounds, "bf16": args.bf16, "max-train-samples": 4000,
        "max-train-samples-per-client": 0, "max-eval-samples": args.max_eval_samples}, dict(kv.split("=", 1) for kv in args.set))
    model, state = model_for(cfg), initial_state(cfg)
    budgets = {pid: ClientBudget(cfg.privacy) for pid in range(args.clients)} if cfg.privacy else {}
    accuracy, sizes = [server_evaluate(cfg, model, state)["accuracy"]], {}
    for rnd in range(1, args.rounds + 1):
        replies = []
        for pid in sample_partitions(list(range(args.clients)), cfg.fraction_train, cfg.min_train_nodes, cfg.data_seed, rnd, 0):
            train_data = client_train_data(cfg, model.tokenizer, pid, args.clients)
            sizes[pid] = len(train_data)
            if cfg.privacy and args.noise_multiplier:
                new = fixed_noise_round(cfg, state, train_data, rnd, pid, args.noise_multiplier)
            else:
                new = local_train(cfg, state, train_data, rnd, pid, device="cpu", budget=budgets.get(pid),
                                  num_partitions=args.clients)[0]
            replies.append((new, len(train_data)))
        # The server's rule: Flower's FedAvg over the replies' arrays, weighted by their examples.
        records = [RecordDict({"arrays": to_record(s), "metrics": MetricRecord({"num-examples": n})}) for s, n in replies]
        state = from_record(aggregate_arrayrecords(records, "num-examples"))
        accuracy.append(server_evaluate(cfg, model, state)["accuracy"])
        print(f"round {rnd}: {accuracy[-1]:.3f}", file=sys.stderr, flush=True)
    json.dump({"config": {k: v for k, v in vars(args).items() if k != "data_dir"}, "lr": cfg.learning_rate,
               "epsilon_spent": {pid: b.spent(b.config.delta_for(sizes[pid])) for pid, b in budgets.items() if b.history},
               "accuracy_per_round": accuracy}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
