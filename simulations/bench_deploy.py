"""A round on the deployment engine against the same round in simulation, printed as one JSON object.

    python -m simulations.bench_deploy --data-dir ../shared/glue

Runs the same federation several times, one after another: `simulations/deploy_local.sh`
(SuperLink with TLS and node authentication, SuperNodes) with warm ClientApp workers; with
--cold, without them (a fresh ClientApp process per message, as Flower runs it); with
--flower-poll, with Flower's default task poll of 1 s instead of the script's 0.2 s; then
`simulations.run` on Flower's simulation engine and on the in-process engine. Each round's
time is the ServerApp's own (`wall_seconds` in the run store: from sending the round's messages
to storing its evaluation), so every variant is timed by the same code. Timings mean something
only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fedrp.cli import OneLineParser
from server.store import RunStore
from simulations.bench_options import add_data_dir, machine, report
from simulations.harness.cells import run_federation

ROOT = Path(__file__).resolve().parents[1]
TARGET_DEPLOY_OVER_SIMULATION = 1.5


def free_ports(count: int) -> list[int]:
    """`count` consecutive free TCP ports (deploy_local.sh counts the SuperNodes' ports up from one)."""
    for start in range(20000, 60000, 97):
        ports = list(range(start, start + count))
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return ports
    raise RuntimeError("no free consecutive ports")


def run_config(args: argparse.Namespace) -> dict:
    """The run-config keys every variant shares, beyond the ones deploy_local.sh sets itself."""
    return {"task": args.task, "max-train-samples": args.nodes * args.samples_per_client,
            "max-train-samples-per-client": args.samples_per_client, "max-eval-samples": args.eval_samples,
            "fraction-evaluate": 0.0}


def deploy(args: argparse.Namespace, warm: bool, poll: float | None = None) -> list[float]:
    """One run of deploy_local.sh (`poll`: its SuperExecs' task poll, else the script's); the rounds' wall seconds."""
    work = Path(tempfile.mkdtemp(prefix="fd-", dir="/tmp"))  # short: the workers' socket paths end at 107 bytes
    link, clientappio = free_ports(args.nodes + 1)[:2]  # the SuperNodes' ports follow the SuperLink's
    extra = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in run_config(args).items())
    env = {**os.environ, "WORKDIR": str(work), "GLUE_DIR": args.data_dir, "NUM_NODES": str(args.nodes),
           "ROUNDS": str(args.rounds), "SUPERLINK_PORT": str(link), "CLIENTAPPIO_PORT": str(clientappio),
           "RUN_CONFIG": extra, "WARM_CLIENTS": "1" if warm else "0",
           **({"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(poll)} if poll else {})}
    log = work.with_suffix(".log")
    with log.open("w") as out:
        done = subprocess.run(["bash", str(ROOT / "simulations" / "deploy_local.sh")], env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"bench_deploy: deploy_local.sh exited {done.returncode}; see {log}")
    return _round_seconds(work / "store.sqlite")


def simulate(args: argparse.Namespace, engine: str) -> list[float]:
    """The same federation through `simulations.run` on one engine."""
    work = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    options = {**run_config(args), "engine": engine, "num-supernodes": args.nodes, "num-server-rounds": args.rounds,
               "fraction-train": 1.0, "min-train-nodes": args.nodes, "partition-scheme": "iid",
               "data-dir": args.data_dir, "store": work / "store.sqlite", "checkpoint-dir": work / "checkpoints"}
    with (work / "run.log").open("w") as log:
        result = run_federation(options, stderr=log)
    return [round(r["wall_seconds"], 2) for r in result["rounds"] if r["round"] > 0]


def _round_seconds(path: Path) -> list[float]:
    store = RunStore.open_readonly(path)
    try:
        run_id = max(r["id"] for r in store.runs())
        return [round(r["wall_seconds"], 2) for r in store.rounds(run_id) if r["round"] > 0]
    finally:
        store.close()


def summarize(seconds: list[float]) -> dict:
    """Round 1 apart: it pays each engine's first model load; the rounds after it are the steady cost."""
    return {"wall_seconds": seconds, "first": seconds[0], "median_after_first": statistics.median(seconds[1:])}


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="simulations.bench_deploy", description=__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--samples-per-client", type=int, default=480)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--cold", action="store_true", help="also run the deployment without warm workers")
    parser.add_argument("--flower-poll", action="store_true",
                        help="also run it with Flower's default task poll of 1 s instead of the script's")
    args = parser.parse_args(argv)
    host = machine()  # before the work: whether other jobs shared the cores
    if args.nodes < 1 or args.rounds < 2 or args.samples_per_client < 1 or args.eval_samples < 1:
        parser.error("--nodes, --samples-per-client and --eval-samples must be at least 1, --rounds at least 2")
    args.data_dir = os.path.abspath(args.data_dir)
    if not Path(args.data_dir, "SST-2", "dev.tsv").is_file():
        parser.error(f"no GLUE folder at {args.data_dir} (expected SST-2/dev.tsv inside)")
    variants = {"deploy_warm": lambda: deploy(args, warm=True)}
    if args.cold:
        variants["deploy_cold"] = lambda: deploy(args, warm=False)
    if args.flower_poll:
        variants["deploy_warm_poll_1s"] = lambda: deploy(args, warm=True, poll=1.0)
    variants |= {"simulation_flower": lambda: simulate(args, "flower"),
                 "simulation_inprocess": lambda: simulate(args, "inprocess")}
    rows = {}
    for name, measure in variants.items():
        print(f"bench_deploy: {name}", file=sys.stderr, flush=True)
        rows[name] = summarize(measure())
    sim = rows["simulation_flower"]["median_after_first"]
    ratios = {f"{name}_over_simulation": row["median_after_first"] / sim
              for name, row in rows.items() if name.startswith("deploy")}
    report({"config": {**run_config(args), "nodes": args.nodes, "rounds": args.rounds},
            "target_deploy_over_simulation_max": TARGET_DEPLOY_OVER_SIMULATION, "variants": rows, "ratios": ratios,
            "met": ratios["deploy_warm_over_simulation"] <= TARGET_DEPLOY_OVER_SIMULATION}, host)


if __name__ == "__main__":
    main()
