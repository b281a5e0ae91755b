"""Serving many task vectors on one backbone (fedrp.serving.TaskBank); prints JSON.

    python -m simulations.bench_serve [--tasks 1 10 100 1000] [--batch 64] [--repeats 5]

In one run: the time to load the most tasks from adapter files (target: 1,000 in under 10 s); the memory a
task adds (its stacked vectors and head, target at most 32 KB plus its head on the default backbone); and the
throughput of batches whose examples belong to 1, 10, 100 or 1,000 different tasks against batches of the same
size and texts from one task (target: at 1,000 tasks at least 0.9x). The adapters are SLaSh at the default
settings with random z and heads: what is timed does not depend on their values. The texts are SST-2 dev's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

TARGETS = {"load_seconds_1000": 10.0, "bytes_per_task_less_head": 32 * 1024, "mixed_over_single_at_1000": 0.9}


def write_adapters(folder: Path, count: int) -> list[Path]:
    """`count` SLaSh adapter files on the default backbone, each with its own random z and head."""
    import torch

    from fedrp import artifact
    from fedrp.adapters import build_model, make_config
    from fedrp.backbone import load_backbone

    model = build_model(load_backbone(), make_config("slash"))
    paths = []
    for i in range(count):
        with torch.no_grad():
            model.z.normal_(0, 1, generator=torch.Generator().manual_seed(i))
            model.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(10**6 + i))
        paths.append(artifact.save(artifact.from_model(model, task=f"t{i}", label_names=["neg", "pos"]),
                                   folder / f"t{i}.safetensors"))
    return paths


def throughput(bank, tasks: list[str], texts: list[str], repeats: int) -> float:
    """Examples per second over `repeats` batches (after one untimed warm-up), median of the batches."""
    bank.predict(tasks, texts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bank.predict(tasks, texts)
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    from simulations.bench_options import add_data_dir, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if min(args.tasks) < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("expected --tasks, --batch and --repeats of at least 1")
    host = machine()  # before the work: whether other jobs shared the cores
    import torch

    from fedrp import glue
    from fedrp.backbone import load_backbone
    from fedrp.serving import TaskBank

    torch.set_grad_enabled(False)
    sst2 = glue.load_split("sst2", "dev", args.data_dir)
    texts = sst2["text"][:args.batch]
    most = max(args.tasks)
    out: dict = {"batch": args.batch, "repeats": args.repeats, "targets": TARGETS}
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_adapters(Path(scratch), most)
        bank = TaskBank(load_backbone())
        start = time.perf_counter()
        for i, path in enumerate(paths):
            bank.add(f"t{i}", path)
        out["load_seconds"] = {most: round(time.perf_counter() - start, 3)}
    vectors, weights, biases = next(iter(bank.kinds.values())).stacks()
    per_task = {"vectors": vectors[0].numel() * 4, "head": (weights[0].numel() + biases[0].numel()) * 4}
    out["bytes_per_task"] = per_task
    single = throughput(bank, ["t0"] * args.batch, texts, args.repeats)
    out["single_task_examples_per_second"] = round(single, 1)
    out["mixed"] = {}
    for count in args.tasks:
        tasks = [f"t{i % count}" for i in range(args.batch)]
        rate = throughput(bank, tasks, texts, args.repeats)
        out["mixed"][count] = {"examples_per_second": round(rate, 1), "over_single": round(rate / single, 3)}
    out["met"] = {
        "load": out["load_seconds"][most] < TARGETS["load_seconds_1000"] if most >= 1000 else None,
        "memory": per_task["vectors"] <= TARGETS["bytes_per_task_less_head"],
        "throughput": out["mixed"][1000]["over_single"] >= TARGETS["mixed_over_single_at_1000"]
        if 1000 in out["mixed"] else None,
    }
    out["machine"] = host
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
