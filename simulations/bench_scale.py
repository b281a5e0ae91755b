"""Scale: 10, 30 and 100 virtual clients, 10 sampled per round; peak memory of the whole run and time per round.

    python -m simulations.bench_scale --data-dir ../shared/glue

Every size is one `python -m simulations.run` process (local Ray, one CPU per client, so one
worker per core). 4,000 SST-2 examples are split IID over the clients and each trains on at
most 40 of them, so a round's work (10 clients x 40 examples, then 200 dev examples on the
server) is the same at every size: what grows with the number of clients is the federation
itself. Every 0.5 s the bench sums the memory of the run's whole process tree (driver, Ray's
gcs_server, raylet and agents, the worker processes): RSS counts pages shared between
processes (libraries, the object store) once per process, PSS splits them among the sharers
(the sum is the tree's real footprint), USS leaves them out. It also counts the backbone loads
of every Ray worker (transformers' "Loading weights" bar in the worker's own log file): one
per worker, however many clients it serves, is what fedrp.federation's per-process cache
promises. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from simulations.bench_options import add_data_dir, machine, report

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = (10, 30, 100)
SAMPLED = 10
TARGET_PEAK_GIB = 4.0
GIB = 2**30
LOADED = "Loading weights: 100%"  # transformers' bar as from_pretrained finishes
POOL = re.compile(r"Constructed ActorPool with: (\d+) actors")


def fraction_for(clients: int, sampled: int) -> float:
    """The smallest fraction-train (in thousandths) that samples `sampled` clients: int(clients * fraction)."""
    return min(1.0, math.ceil(sampled / clients * 1000) / 1000)


def run_options(clients: int, args: argparse.Namespace, work: Path) -> list[str]:
    """The simulations.run options of one size."""
    options = {
        "num-supernodes": clients, "fraction-train": fraction_for(clients, args.sampled), "fraction-evaluate": 0.0,
        "task": "sst2", "method": "slash", "num-server-rounds": args.rounds, "partition-scheme": "iid",
        "max-train-samples": args.max_train_samples, "max-train-samples-per-client": args.per_client,
        "max-eval-samples": 200, "min-train-nodes": 2, "data-dir": os.path.abspath(args.data_dir),
        "store": str(work / "store.sqlite"), "checkpoint-dir": str(work / "ckpt"), "cpus-per-client": 1.0,
    }
    return [f"--{k}={v}" for k, v in options.items()]


def _kind(proc: psutil.Process) -> str:
    """What a process of the tree is: driver, a Ray service, a client actor or another Ray worker."""
    name = proc.name()
    cmd = " ".join(proc.cmdline()[:2])
    if "ClientAppActor" in cmd:
        return "client-actor"
    if cmd.startswith("ray::IDLE") or "default_worker.py" in cmd:
        return "ray-idle-worker"
    if cmd.startswith("ray::"):
        return "ray-agents"
    if name in ("gcs_server", "raylet"):
        return name
    if "dashboard" in cmd or "log_monitor" in cmd or "monitor.py" in cmd:
        return "ray-python-services"
    return "other"


class TreeSampler(threading.Thread):
    """Samples RSS, PSS and USS summed over a process and all its descendants until stopped."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.stop = psutil.Process(root), interval, threading.Event()
        self.peak = {"rss": 0, "pss": 0, "uss": 0}
        self.at_peak_rss: dict[str, float] = {}
        self.max_processes = 0
        self.max_actor_rss = 0
        self.actor_pids: set[int] = set()
        self.ray_logs: Path | None = None  # the Ray session's log folder, from gcs_server's command line
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            self._sample()
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        totals, by_kind = Counter(), Counter()
        for p in procs:
            try:
                mem, kind = p.memory_full_info(), _kind(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            totals.update(rss=mem.rss, pss=mem.pss, uss=mem.uss)
            by_kind[kind] += mem.rss
            if kind == "client-actor":
                self.max_actor_rss = max(self.max_actor_rss, mem.rss)
                self.actor_pids.add(p.pid)
            elif kind == "gcs_server" and self.ray_logs is None:
                self.ray_logs = _log_dir(p)
        self.samples += 1
        self.max_processes = max(self.max_processes, len(procs))
        if totals["rss"] > self.peak["rss"]:
            self.at_peak_rss = {k: round(v / 2**20) for k, v in sorted(by_kind.items())}
        for key in self.peak:
            self.peak[key] = max(self.peak[key], totals[key])


def _log_dir(proc: psutil.Process) -> Path | None:
    for arg in proc.cmdline():
        if arg.startswith("--log_dir="):
            return Path(arg.split("=", 1)[1])
    return None


def model_loads(ray_logs: Path | None) -> dict[int, int]:
    """Backbone loads per Ray worker pid that loaded one, read from each worker's own stderr log.

    Ray names those files worker-<id>-<job>-<pid>.err; the copies it forwards to the driver
    may split a progress bar over lines, so they are not counted.
    """
    loads = {}
    for path in (ray_logs.glob("worker-*.err") if ray_logs else []):
        count = path.read_text(errors="replace").count(LOADED)
        if count:
            loads[int(path.stem.rsplit("-", 1)[1])] = count
    return loads


def run_size(clients: int, args: argparse.Namespace) -> dict:
    """One simulation of `clients` clients, sampled while it runs."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        cmd = [sys.executable, "-m", "simulations.run", "--json", *run_options(clients, args, work)]
        print("running", " ".join(cmd), file=sys.stderr, flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the load count reads transformers' progress bar
        env.pop("RAY_ADDRESS", None)
        start = time.monotonic()
        with open(work / "out.txt", "w") as out, open(work / "err.txt", "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
            sampler = TreeSampler(proc.pid, args.interval)
            sampler.start()
            try:
                code = proc.wait(timeout=args.timeout)
            finally:
                sampler.stop.set()
                sampler.join()
                if proc.poll() is None:
                    proc.kill()
        wall = time.monotonic() - start
        stderr = (work / "err.txt").read_text(errors="replace")
        if args.log_dir:
            args.log_dir.mkdir(parents=True, exist_ok=True)
            (args.log_dir / f"bench_scale_{clients}.err").write_text(stderr)
        if code != 0:
            raise SystemExit(f"{clients} clients: simulations.run exited with {code}:\n{stderr[-3000:]}")
        result = json.loads((work / "out.txt").read_text().strip().splitlines()[-1])
        return condense(clients, args, result, sampler, wall, stderr)


def condense(clients: int, args: argparse.Namespace, result: dict, sampler: TreeSampler, wall: float,
             stderr: str) -> dict:
    """One size's row: memory peaks, seconds per round, and the model loads per worker."""
    from server.store import RunStore

    rounds = [r for r in result["rounds"] if r["round"] > 0]
    replies = RunStore(result["store"]).replies(result["run_id"])
    loads, pool = model_loads(sampler.ray_logs), POOL.search(stderr)
    round_seconds = [round(r["wall_seconds"], 2) for r in rounds]
    return {
        "clients": clients, "fraction_train": fraction_for(clients, args.sampled), "status": result["status"],
        "sampled_per_round": [r["accepted"] + r["refused"] for r in rounds],
        "round_seconds": round_seconds, "mean_round_seconds": round(sum(round_seconds) / len(round_seconds), 2),
        "wall_seconds": round(wall, 1), "outside_rounds_seconds": round(wall - sum(round_seconds), 1),
        "peak_gib": {k: round(v / GIB, 3) for k, v in sampler.peak.items()},
        "rss_mib_by_kind_at_peak": sampler.at_peak_rss, "max_client_actor_rss_mib": round(sampler.max_actor_rss / 2**20),
        "max_processes": sampler.max_processes, "samples": sampler.samples,
        "actor_pool": int(pool.group(1)) if pool else None, "client_actor_pids": sorted(sampler.actor_pids),
        "model_loads_per_worker_pid": {str(k): v for k, v in sorted(loads.items())},
        "train_messages": len(replies), "clients_trained": len({r["partition_id"] for r in replies}),
        "final_accuracy": result["final_metrics"].get("accuracy"),
    }


def growth(cells: list[dict]) -> dict:
    """How peak memory and round time change per extra client, from the smallest to the largest size."""
    small, large = cells[0], cells[-1]
    extra = large["clients"] - small["clients"]
    if extra <= 0:
        return {}
    return {
        "peak_rss_mib_per_extra_client": round((large["peak_gib"]["rss"] - small["peak_gib"]["rss"]) * 1024 / extra, 2),
        "peak_pss_mib_per_extra_client": round((large["peak_gib"]["pss"] - small["peak_gib"]["pss"]) * 1024 / extra, 2),
        "mean_round_seconds_per_extra_client": round(
            (large["mean_round_seconds"] - small["mean_round_seconds"]) / extra, 4),
        "outside_rounds_seconds_per_extra_client": round(
            (large["outside_rounds_seconds"] - small["outside_rounds_seconds"]) / extra, 4),
    }


def verdict(cells: list[dict]) -> dict:
    """The 4 GiB target at the largest size, and whether every worker loaded the backbone exactly once."""
    largest = cells[-1]
    once = all(c["model_loads_per_worker_pid"] and set(c["model_loads_per_worker_pid"].values()) == {1}
               for c in cells)
    return {"peak_rss_under_target": largest["peak_gib"]["rss"] < TARGET_PEAK_GIB,
            "peak_pss_under_target": largest["peak_gib"]["pss"] < TARGET_PEAK_GIB,
            "backbone_loaded_once_per_worker": once}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--clients", nargs="+", type=int, default=list(CLIENTS))
    parser.add_argument("--sampled", type=int, default=SAMPLED, help="clients trained per round at every size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, default=4000, help="split over the clients")
    parser.add_argument("--per-client", type=int, default=40, help="max-train-samples-per-client")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one size may take")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep each run's stderr here")
    args = parser.parse_args(argv)
    host = machine()  # before the work: whether other jobs shared the cores
    cpu_before = psutil.Process().cpu_times()
    cells = [run_size(n, args) for n in sorted(args.clients)]
    cpu_after = psutil.Process().cpu_times()
    report({
        "setting": {"task": "sst2", "method": "slash", "rounds": args.rounds, "sampled_per_round": args.sampled,
                    "max_train_samples": args.max_train_samples, "max_train_samples_per_client": args.per_client,
                    "partition_scheme": "iid", "fraction_evaluate": 0.0, "max_eval_samples": 200,
                    "cpus_per_client": 1.0, "cpu_count": os.cpu_count(), "memory_sample_interval_s": args.interval,
                    "memory_total_gib": round(psutil.virtual_memory().total / GIB, 1),
                    "sampler_cpu_seconds": round((cpu_after.user + cpu_after.system)
                                                 - (cpu_before.user + cpu_before.system), 1)},
        "target_peak_gib": TARGET_PEAK_GIB, "cells": cells, "growth": growth(cells), "met": verdict(cells),
    }, host)


if __name__ == "__main__":
    main()
