"""One federated client's round on a GPU (the edge client's CUDA path), printed as one JSON object.

    python -m simulations.gpu_client --data-dir ../shared/glue [--model PATH] [--device cuda]

Builds the run's model as a client would, trains one round on partition 0 of 10 (SST-2,
Dirichlet 0.5) with the device's bf16 autocast, then one DP-SGD round, and reports the
projection fingerprint (it must equal the CPU's), time, peak GPU memory and dev accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch
import transformers

from fedrp.federation import (
    FedConfig,
    client_train_data,
    identity,
    initial_state,
    local_train,
    model_for,
    server_evaluate,
)
from fedrp.privacy.budget import ClientBudget
from fedrp.train import select_device, use_bf16
from simulations.bench_options import add_data_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--model", default="", help="backbone name or folder (default: the packaged MiniLM)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--samples", type=int, default=400, help="the client's training examples")
    parser.add_argument("--projection-mode", default="stored", help="stored, streamed or srht (large backbones)")
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()
    device = select_device(args.device)
    cfg = FedConfig(model=args.model, data_dir=args.data_dir, max_train_samples=4000,
                    max_train_samples_per_client=args.samples, max_eval_samples=400,
                    projection_mode=args.projection_mode)
    model = model_for(cfg)
    state = initial_state(cfg)
    data = client_train_data(cfg, model.tokenizer, 0, 10)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
           "torch": torch.__version__, "bf16": use_bf16(cfg.bf16, device), "examples": len(data),
           "projection_mode": args.projection_mode,
           "fingerprint": identity(model).get("fingerprint"), "accuracy_before": server_evaluate(cfg, model, state)}
    dp_cfg = dataclasses.replace(cfg, dp_epsilon=8.0)
    for name, run_cfg, budget in (("round", cfg, None), ("dp_round", dp_cfg, ClientBudget(dp_cfg.privacy))):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        new, metrics = local_train(run_cfg, state, data, 1, 0, device=str(device), budget=budget)
        seconds = time.perf_counter() - start
        out[name] = {"metrics": metrics, "seconds": seconds, "accuracy_after": server_evaluate(cfg, model, new),
                     "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
