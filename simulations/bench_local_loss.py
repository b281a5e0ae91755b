"""Federated rounds without Flower, for quick comparisons of local-training settings; prints JSON.

    python -m simulations.bench_local_loss --alpha 1.0 --lr 0.01 --local-loss ce --rounds 5

Samples clients and averages their replies by examples exactly as FedAvgRP does, but in one
process on one thread, so settings can be compared side by side in minutes. The README's
figures on local learning rates and the logit-adjusted loss come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers

from fedrp.federation import FedConfig, client_train_data, initial_state, local_train, model_for, server_evaluate
from server.strategy import sample


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDRP_GLUE_DIR", "../shared/glue"))
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--local-loss", default="logit-adjusted")
    parser.add_argument("--lr-decay", default="none")
    parser.add_argument("--bf16", default="off")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-eval-samples", type=int, default=400)
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(1)
    cfg = FedConfig(data_dir=args.data_dir, alpha=args.alpha, lr=args.lr, local_loss=args.local_loss, lr_decay=args.lr_decay,
                    num_server_rounds=args.rounds, bf16=args.bf16,
                    max_train_samples=4000, max_train_samples_per_client=0, max_eval_samples=args.max_eval_samples)
    model, state = model_for(cfg), initial_state(cfg)
    accuracy = [server_evaluate(cfg, model, state)["accuracy"]]
    for rnd in range(1, args.rounds + 1):
        replies = []
        for pid in sample(list(range(args.clients)), cfg.fraction_train, cfg.min_train_nodes, cfg.seed, rnd, 0):
            train_data = client_train_data(cfg, model.tokenizer, pid, args.clients)
            new, metrics = local_train(cfg, state, train_data, rnd, pid, device="cpu")
            replies.append((new, metrics["num-examples"]))
        total = sum(n for _, n in replies)
        state = {k: (sum(n * s[k] for s, n in replies) / total).astype(np.float32) for k in state}
        accuracy.append(server_evaluate(cfg, model, state)["accuracy"])
        print(f"round {rnd}: {accuracy[-1]:.3f}", file=sys.stderr, flush=True)
    json.dump({"config": {k: v for k, v in vars(args).items() if k != "data_dir"}, "lr": cfg.learning_rate,
               "accuracy_per_round": accuracy}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
