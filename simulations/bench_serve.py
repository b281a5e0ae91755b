"""Serving many task vectors on one backbone (fedrp.serving.TaskBank); prints JSON.

    python -m simulations.bench_serve [--tasks 1 10 100 1000] [--batch 64] [--repeats 5]

In one run: the time to load the most tasks from adapter files (target: 1,000 in under 10 s); the memory a
task adds (its stacked vectors and head, target at most 32 KB plus its head on the default backbone); the
throughput of batches whose examples belong to 1, 10, 100 or 1,000 different tasks against batches of the same
size and texts from one task (target: at 1,000 tasks at least 0.9x); and, through `fedrp serve` in its own
process on a local port, the latency of one-text requests (of random tasks) from 1, 8 and 64 concurrent clients
(target: p99 at 8 clients at most 2x a lone request's p50). `compute_ms` is the bank's own time for one batched
call of 1, 8 and 64 texts: the floor under those latencies, which batching lowers only where a bigger batch costs
little more than a small one (a GPU; on a CPU the cost grows with the texts). The adapters are SLaSh at the
default settings with random z and heads: what is timed does not depend on their values. The texts are SST-2
dev's. `--device` places the bank (and the server's) on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

TARGETS = {"load_seconds_1000": 10.0, "bytes_per_task_less_head": 32 * 1024, "mixed_over_single_at_1000": 0.9,
           "p99_at_8_over_single": 2.0}


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


def median_seconds(bank, tasks: list[str], texts: list[str], repeats: int) -> float:
    """The median time of `repeats` batched calls, after one untimed warm-up."""
    bank.predict(tasks, texts)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bank.predict(tasks, texts)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(bank, tasks: list[str], texts: list[str], repeats: int) -> float:
    """Examples per second of batched calls (median)."""
    return len(texts) / median_seconds(bank, tasks, texts, repeats)


def latencies(folder: Path, tasks: int, concurrency: list[int], requests: int, texts: list[str],
              device: str = "cpu") -> dict:
    """For each number of concurrent HTTP clients (each on its own kept-alive connection): p50 and p99 (ms) of
    one-text requests of random tasks to `fedrp serve`, in its own process over the folder (as it is deployed)."""
    import os
    import socket
    import subprocess
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import numpy as np

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryFile("w+") as log:  # not a pipe: a full one would stall the server
        server = subprocess.Popen([sys.executable, "-m", "fedrp", "serve", "--adapters", str(folder), "--port", str(port),
                                   "--device", device], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                  stdout=subprocess.DEVNULL, stderr=log, text=True)
        url = f"http://127.0.0.1:{port}"

        def one(i: int, local: threading.local) -> float:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=url, timeout=120)
            start = time.perf_counter()
            reply = local.client.post("/v1/predict", json={"task": f"t{i % tasks}", "texts": [texts[i % len(texts)]]})
            reply.raise_for_status()
            return time.perf_counter() - start

        out = {}
        try:
            _wait_until_serving(url, tasks, server, log)
            one(0, threading.local())  # warm-up
            for clients in concurrency:
                local = threading.local()  # one connection per client thread, at this level
                with ThreadPoolExecutor(clients) as pool:
                    seconds = list(pool.map(one, range(max(requests, clients)), [local] * max(requests, clients)))
                out[clients] = {"p50_ms": round(float(np.percentile(seconds, 50)) * 1000, 1),
                                "p99_ms": round(float(np.percentile(seconds, 99)) * 1000, 1)}
        finally:
            server.terminate()
            server.wait(timeout=60)
    return out


def _wait_until_serving(url: str, tasks: int, server, log) -> None:
    import httpx

    deadline = time.time() + 300
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/healthz").json()["tasks"] == tasks:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"fedrp serve did not come up with {tasks} tasks: {log.read()[-2000:] or 'timed out'}")


def compute_ms(bank, texts: list[str], sizes: list[int], repeats: int) -> dict:
    """The bank's own time (ms, median) for one batched call of each size: the floor under the latency at that
    many concurrent one-text requests, whatever the server does."""
    return {size: round(median_seconds(bank, ["t0"] * size, [texts[i % len(texts)] for i in range(size)], repeats)
                        * 1000, 1) for size in sizes}


def main(argv: list[str] | None = None) -> dict:
    from simulations.bench_options import add_data_dir, machine, report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8, 64], help="concurrent HTTP clients")
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--device", default="auto", help="where the bank runs: auto (cuda, mps, cpu), or a torch device")
    args = parser.parse_args(argv)
    if min(args.tasks) < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("expected --tasks, --batch and --repeats of at least 1")
    host = machine()  # before the work: whether other jobs shared the cores
    from fedrp import glue
    from fedrp.backbone import load_backbone
    from fedrp.serving import TaskBank
    from fedrp.train import select_device

    device = select_device(args.device)

    sst2 = glue.load_split("sst2", "dev", args.data_dir)
    texts = sst2["text"][:args.batch]
    most = max(args.tasks)
    out: dict = {"batch": args.batch, "repeats": args.repeats, "device": str(device), "targets": TARGETS}
    scratch = tempfile.TemporaryDirectory()
    folder = Path(scratch.name)
    paths = write_adapters(folder, most)
    bank = TaskBank(load_backbone(), device)
    start = time.perf_counter()
    for i, path in enumerate(paths):
        bank.add(path.stem, path)
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
    out["compute_ms"] = compute_ms(bank, texts, sorted({1, *args.clients}), args.repeats)
    del bank  # the latency runs load their own, in the server's process
    out["latency"] = latencies(folder, most, args.clients, args.requests, texts, str(device))
    scratch.cleanup()
    out["met"] = {
        "load": out["load_seconds"][most] < TARGETS["load_seconds_1000"] if most >= 1000 else None,
        "memory": per_task["vectors"] <= TARGETS["bytes_per_task_less_head"],
        "throughput": out["mixed"][1000]["over_single"] >= TARGETS["mixed_over_single_at_1000"]
        if 1000 in out["mixed"] else None,
        "latency": out["latency"][8]["p99_ms"] <= TARGETS["p99_at_8_over_single"] * out["latency"][1]["p50_ms"]
        if {1, 8} <= set(out["latency"]) else None,
    }
    return report(out, host)


if __name__ == "__main__":
    main()
