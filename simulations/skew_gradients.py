"""Where a label-skewed federation's gradient comes from, at the initial global state; prints JSON.

    python -m simulations.skew_gradients [--task qnli] [--alpha 0.1] [--data-dir DIR]

For each client of the grid's partition (10 clients, 2,000 examples, 1,000 held out), the norm of the summed
gradient (of z and the head) of its majority-class and of its other examples, under the logit-adjusted local
loss and under plain cross-entropy; then the federation's summed gradient under each. Summed over clients,
cross-entropy's is the centralized gradient on the same examples, so their cosine says whether the adjusted
loss, at the start, points the federation where centralized training would go. And the same cosine for the mean
of the clients' cross-entropy gradients each clipped at --local-clip (FedSGD with the clients' default clipping:
each client then counts by its gradient's direction). Nothing trains here.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from simulations.bench_options import add_data_dir


def client_gradients(model, data, offsets: torch.Tensor | None) -> dict[int, torch.Tensor]:
    """The summed gradient (flattened over the trainable parameters) of each class's examples of one client."""
    from fedrp.data import loader

    params = list(model.trainable_parameters().values())
    labels = np.asarray(data["label"])
    out = {}
    for cls in np.unique(labels):
        for p in params:
            p.grad = None
        for batch in loader(data.select(np.flatnonzero(labels == cls)), model.tokenizer, 64):
            y = batch.pop("labels")
            logits = model(**batch)
            F.cross_entropy(logits if offsets is None else logits + offsets, y, reduction="sum").backward()
        out[int(cls)] = torch.cat([p.grad.reshape(-1) for p in params]).detach().clone()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="qnli")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-train-samples", type=int, default=2000)
    parser.add_argument("--validation-samples", type=int, default=1000)
    parser.add_argument("--data-seed", type=int, default=0, help="the subset, the partition and the initial head")
    parser.add_argument("--local-clip", type=float, default=1.0, help="the clients' clipping norm (local-clip)")
    add_data_dir(parser)
    args = parser.parse_args(argv)
    from fedrp import glue

    task = glue.get_task(args.task)
    if task.is_regression:
        parser.error(f"--task {args.task} is a regression task: expected a classification task (the loss is per class)")
    from fedrp.federation.clientdata import client_train_data
    from fedrp.federation.config import FedConfig
    from fedrp.federation.local import logit_offsets
    from fedrp.federation.model import initial_state, model_for
    from fedrp.payload import load_trainable_state

    cfg = FedConfig.from_run_config({"task": args.task, "method": "slash", "alpha": args.alpha,
                                     "max-train-samples": args.max_train_samples,
                                     "validation-samples": args.validation_samples, "data-dir": args.data_dir,
                                     "data-seed": args.data_seed, "local-clip": args.local_clip})
    model = model_for(cfg)
    load_trainable_state(model, initial_state(cfg))
    out: dict = {"task": args.task, "alpha": args.alpha, "clients": []}
    total = {"logit-adjusted": 0.0, "ce": 0.0, "clipped": 0.0}
    for pid in range(args.clients):
        data = client_train_data(cfg, model.tokenizer, pid, args.clients)
        counts = np.bincount(np.asarray(data["label"]), minlength=task.num_labels)
        offsets = torch.tensor(logit_offsets(data["label"], len(counts)), dtype=torch.float32)
        row = {"counts": counts.tolist()}
        for loss, off in (("logit-adjusted", offsets), ("ce", None)):
            grads = client_gradients(model, data, off)
            major = int(counts.argmax())
            row[loss] = {"majority": round(float(grads[major].norm()), 2),
                         "others": round(float(sum(g for c, g in grads.items() if c != major).norm()), 2)
                         if len(grads) > 1 else 0.0}
            total[loss] = total[loss] + sum(grads.values())
        mean = sum(grads.values()) / len(data)  # the client's plain cross-entropy step (grads: the last loss's)
        scale = min(1.0, cfg.local_clip / float(mean.norm())) if cfg.local_clip else 1.0
        total["clipped"] = total["clipped"] + mean * scale
        out["clients"].append(row)
    out["federation"] = {"logit_adjusted_norm": round(float(total["logit-adjusted"].norm()), 2),
                         "ce_norm": round(float(total["ce"].norm()), 2),
                         "cosine": round(float(F.cosine_similarity(total["logit-adjusted"], total["ce"], dim=0)), 4),
                         "clipped_ce_cosine": round(float(F.cosine_similarity(total["clipped"], total["ce"], dim=0)), 4)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
