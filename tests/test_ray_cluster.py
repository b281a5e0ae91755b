"""A simulation on an existing Ray cluster (`ray start --head`) instead of the local Ray that Flower starts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from simulations.run import ray_init_args

ROOT = Path(__file__).resolve().parents[1]
JOBS = """import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps(state.jobs()))
"""


def test_ray_init_args_join_a_cluster_without_sizing_it():
    assert ray_init_args("10.0.0.1:6379") == {"address": "10.0.0.1:6379", "include_dashboard": False}
    for local in (None, "local"):  # never the cluster a `ray start` on this machine left behind
        args = ray_init_args(local)
        assert args["address"] == "local" and args["num_cpus"] == os.cpu_count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str) -> None:
    """End only this cluster's processes (they name its temp dir), not every Ray on the machine as `ray stop` would."""
    heads = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in a for a in p.info["cmdline"] or [])]
    procs = {q.pid: q for p in heads for q in [p, *p.children(recursive=True)]}
    for p in procs.values():
        p.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=2)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def ray_cluster():
    """A one-node, two-CPU Ray cluster of its own on loopback: (address, temp dir)."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "HF_HUB_OFFLINE": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}  # the workers get the environment of `ray start`, not the driver's
    cmd = ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
           "--include-dashboard=false", f"--dashboard-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        started = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{port}", Path(temp_dir)
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_simulation_runs_on_an_existing_ray_cluster(tmp_path, glue_dir, ray_cluster):
    address, temp_dir = ray_cluster
    store = tmp_path / "store.sqlite"
    cmd = [sys.executable, "-m", "simulations.run", "--ray-address", address, "--num-supernodes", "2", "--json",
           "--data-dir", str(glue_dir), "--store", str(store), "--checkpoint-dir", str(tmp_path / "ckpt"),
           "--task", "sst2", "--num-server-rounds", "1", "--fraction-train", "1.0", "--fraction-evaluate", "0",
           "--max-train-samples", "160", "--max-train-samples-per-client", "40", "--max-eval-samples", "100",
           "--bf16", "off"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["status"] == "completed" and [r["round"] for r in out["rounds"]] == [0, 1]
    assert out["rounds"][1]["accepted"] == 2 and out["rounds"][1]["refused"] == 0

    # The cluster's own job table holds the simulation as a finished driver, and its session logs
    # hold the client actors of that job: a local Ray would have left neither here.
    check = subprocess.run([sys.executable, "-c", JOBS, address], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-2000:]
    runs = [j for j in json.loads(check.stdout.strip().splitlines()[-1]) if str(store) in j["Entrypoint"]]
    assert len(runs) == 1 and runs[0]["IsDead"], runs
    actors = list((temp_dir / "session_latest" / "logs").glob(f"worker-*-{runs[0]['JobID']}-*.out"))
    assert len(actors) >= 2, actors
