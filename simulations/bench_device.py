"""Training throughput on an accelerator, by method and batch size, with where a step's time goes; prints JSON.

    python -m simulations.bench_device --data-dir ../shared/glue            # the device check (GPU)
    python -m simulations.bench_device --batch-sizes 8 --steps 3 --accuracy-samples 256   # a CPU dry run

For each method and batch size, on SST-2's training set: examples per second of `fedrp.train.train`
as a user gets it (`loop`), of the same optimizer steps on batches collated beforehand and kept on
the device, with no host sync inside the timed steps (`steps`: what the device itself gives), and
of the host's batching alone (`loader`); and the peak device memory. Then slash trains one epoch
on the whole training set at each accuracy batch size (the first at its default rate, the others
at that rate scaled by the square root of the batch ratio, a rule fixed beforehand, not chosen on
dev) and reports dev accuracy once for each.
Last, the projection check: every W_l held on the device equals the CPU's, and its fingerprint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch
import transformers

from fedrp import data, projection
from fedrp.adapters.base import AdapterModel
from fedrp.backbone import load_backbone
from fedrp.glue import get_task
from fedrp.methods import RATES, build
from fedrp.spec import ModelSpec
from fedrp.train import (
    TrainConfig,
    autocast,
    evaluate,
    loss_fn,
    make_optimizer,
    select_device,
    store_frozen_in_bf16,
    train,
    use_bf16,
)
from simulations.bench_options import add_data_dir


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _model(method: str, model_name: str, device: torch.device):
    """A fresh backbone per method: LoRA wraps it in place and bf16 storage casts it in place."""
    return build(ModelSpec(method=method, num_labels=get_task("sst2").num_labels), load_backbone(model_name or None)).to(device)


def _config(method: str, batch_size: int, lr: float | None = None) -> TrainConfig:
    return TrainConfig(lr=lr or RATES[method].centralized, epochs=1.0, batch_size=batch_size, schedule="constant",
                       warmup_ratio=0.0, bf16="auto", progress=False)


def loader_rate(train_set, tokenizer, batch_size: int, steps: int) -> float:
    """Examples per second of the host's batching alone (fetch from arrow, pad, build tensors)."""
    start, n = time.perf_counter(), 0
    for i, batch in enumerate(data.loader(train_set, tokenizer, batch_size, shuffle=True)):
        n += len(batch["labels"])
        if i + 1 == steps:
            break
    return n / (time.perf_counter() - start)


def device_steps_rate(model, batches: list[dict], config: TrainConfig, device: torch.device) -> float:
    """Examples per second of forward, loss, backward, clipping and the optimizer step on batches
    already on the device; one sync at the end, none per step."""
    params = list(model.trainable_parameters().values())
    optimizer = make_optimizer(params, config)
    bf16 = use_bf16(config.bf16, device)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast(device, bf16):
            logits = model(**inputs)
        loss_fn(logits, batch["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return sum(len(b["labels"]) for b in batches) / (time.perf_counter() - start)


def throughput(method: str, batch_size: int, steps: int, train_set, model_name: str, device: torch.device) -> dict:
    """The three rates and the peak memory of one method at one batch size."""
    model = _model(method, model_name, device)
    config = _config(method, batch_size)
    if use_bf16(config.bf16, device):
        store_frozen_in_bf16(model)
    part = data.subset(train_set, steps * batch_size, seed=1)
    train(model, part, config, device)  # warm-up on the same batches: kernels load lazily on first use, per shape
    _reset_peak(device)
    _sync(device)
    loop = train(model, part, config, device)
    out = {"loop": round(loop.samples_per_second, 1), "loop_steps": loop.steps, "peak_mib": _peak_mib(device)}
    batches = [{k: v.to(device) for k, v in b.items()} for b in data.loader(part, model.tokenizer, batch_size, True)]
    out["steps"] = round(device_steps_rate(model, batches, config, device), 1)
    out["loader"] = round(loader_rate(part, model.tokenizer, batch_size, steps), 1)
    return out


def accuracy(batch_sizes: list[int], train_set, dev_set, model_name: str, device: torch.device) -> dict:
    """Slash, one epoch on `train_set` at each batch size: dev accuracy and the loop's rate."""
    out = {}
    base = batch_sizes[0]
    for b in batch_sizes:
        lr = RATES["slash"].centralized * math.sqrt(b / base)
        model = _model("slash", model_name, device)
        config = TrainConfig(lr=lr, epochs=1.0, batch_size=b, bf16="auto", progress=False)  # warmup + linear decay
        result = train(model, train_set, config, device)
        acc = evaluate(model, dev_set, get_task("sst2"), batch_size=256, device=device)["accuracy"]
        out[str(b)] = {"lr": lr, "dev_accuracy": round(acc, 4), "loop": round(result.samples_per_second, 1),
                       "seconds": round(result.seconds, 1)}
    return out


def projection_check(model_name: str, device: torch.device) -> dict:
    """Each W_l as the device holds it, against the CPU's generation of the same spec."""
    model = _model("slash", model_name, device)
    assert isinstance(model, AdapterModel)
    cpu = projection.generate(model.spec)
    held = [model.projections[i].float().cpu() for i in range(model.projections.count)]
    equal = len(held) == len(cpu) and all(torch.equal(h, torch.from_numpy(c)) for h, c in zip(held, cpu, strict=True))
    return {"fingerprint": model.fingerprint, "fingerprint_recomputed_on_cpu": projection.fingerprint(model.spec),
            "device_weights_equal_cpu": equal, "layers": len(cpu)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--model", default="", help="backbone name or folder (default: the packaged MiniLM)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="slash,jrwarp,lora,full")
    parser.add_argument("--batch-sizes", default="32,128,256,512")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per method and batch size")
    parser.add_argument("--accuracy-batch-sizes", default="32,256,512", help="slash, one epoch each; empty: skip")
    parser.add_argument("--accuracy-samples", type=int, default=0, help="training examples for that (0: all)")
    args = parser.parse_args(argv)
    try:
        device = select_device(args.device)
        methods = args.methods.split(",")
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        acc_sizes = [int(b) for b in args.accuracy_batch_sizes.split(",") if b]
    except ValueError as err:
        parser.exit(2, f"bench_device: error: {err}\n")
    transformers.utils.logging.set_verbosity_error()
    start = time.perf_counter()
    tokenizer = load_backbone(args.model or None).tokenizer
    train_set = data.load_tokenized("sst2", "train", tokenizer, data_dir=args.data_dir)
    dev_set = data.load_tokenized("sst2", "dev", tokenizer, data_dir=args.data_dir)
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "bf16": use_bf16("auto", device), "train_examples": len(train_set), "steps": args.steps,
                 "projection": projection_check(args.model, device), "throughput": {}}
    for method in methods:
        out["throughput"][method] = {str(b): throughput(method, b, args.steps, train_set, args.model, device)
                                     for b in sizes}
        print(json.dumps({method: out["throughput"][method]}), file=sys.stderr, flush=True)
    if acc_sizes:
        acc_train = data.subset(train_set, args.accuracy_samples or None, seed=0)
        out["accuracy"] = accuracy(acc_sizes, acc_train, dev_set, args.model, device)
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
