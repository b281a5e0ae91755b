"""The same ServerApp and ClientApp on Flower's two real engines, as real processes.

- the simulation engine behind `flwr run`, on a SuperLink started with `--simulation`;
- the deployment engine on loopback through `simulations/deploy_local.sh`, the operator's
  script: TLS, SuperNode authentication, a SuperNode on a GLUE partition and one on its own
  files, and a SuperNode whose key was never registered.

Each test owns its FLWR_HOME, ports and files under tmp_path, and stops every process it
started, including the ones Flower starts in sessions of their own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Self

import psutil
import pytest

from fedrp import glue
from server.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
MAX_REPLY_BYTES = 8192  # z (1,024) + head (2 x 384 + 2) in fp32 = 7,176 bytes
RUN_TIMEOUT = 600  # seconds for one `flwr run`; the runs below take one to two minutes


def assert_learned(rounds: list[dict]) -> None:
    """The federated model beats the untrained one (round 0) on the server's dev subset."""
    first, last = rounds[0]["server_metrics"]["accuracy"], rounds[-1]["server_metrics"]["accuracy"]
    assert last > first, f"accuracy went from {first} (round 0) to {last} (round {rounds[-1]['round']})"


# ---- processes ---------------------------------------------------------------------------

class Processes:
    """Starts processes in sessions of their own and stops all of them on exit.

    SuperLink and SuperNode start flower-superexec in a new session, and the simulation's Ray
    workers end up outside every session started here, so killing our process groups is not
    enough: on exit, any process still carrying this instance's token in its environment
    (which every descendant inherits) is stopped too.
    """

    def __init__(self, env: dict, cwd: Path, logs: Path) -> None:
        self.token = uuid.uuid4().hex
        self.env = {**env, "FEDRP_ENGINE_TEST_TOKEN": self.token}
        self.cwd, self.logs = cwd, logs
        self.started: list[subprocess.Popen] = []
        logs.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def start(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        """A background process; stdout and stderr go to logs/<name>.log (see `log`)."""
        with open(self.logs / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(args, cwd=self.cwd, env={**self.env, **(env or {})}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.name = name  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def run(self, name: str, args: list[str], timeout: float, env: dict | None = None) -> tuple[int, str]:
        """A foreground command: (exit status, output); its group is killed on any way out."""
        proc = self.start(name, args, env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(args[:3])} ...` ran past {timeout} s:\n{self.log(name)[-4000:]}")
        finally:
            _killpg(proc, signal.SIGKILL)
        return proc.returncode, self.log(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        try:
            for proc in self.started:
                _killpg(proc, signal.SIGTERM)  # SuperLink and SuperNodes shut down their helpers
            deadline = time.monotonic() + 15
            for proc in self.started:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:
            for proc in self.started:
                _killpg(proc, signal.SIGKILL)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            self._stop_descendants()

    def _stop_descendants(self) -> None:
        ours = []
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get("FEDRP_ENGINE_TEST_TOKEN") == self.token:
                    ours.append(p)
            except psutil.Error:  # gone, a zombie, or not ours to read
                continue
        for p in ours:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(ours, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group outlives its leader; its id stays the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


def free_ports(n: int, consecutive: bool = False) -> list[int]:
    """n loopback ports nothing listens on now (consecutive: p, p+1, ...)."""
    for _ in range(50):
        socks = []
        try:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            socks.append(first)
            ports = [first.getsockname()[1]]
            for i in range(1, n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", ports[0] + i if consecutive else 0))
                ports.append(s.getsockname()[1])
            return ports
        except OSError:  # a consecutive port was taken: try another start
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"found no {n} free loopback ports")


def wait_for_port(port: int, timeout: float, procs: Processes, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.name} exited with {proc.returncode}:\n{procs.log(proc.name)[-4000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{proc.name} did not listen on port {port} within {timeout} s:\n{procs.log(proc.name)[-4000:]}")


# ---- Flower's environment, connections and app ---------------------------------------------

def flower_env(tmp_path: Path, glue_dir: Path) -> dict:
    home = tmp_path / "flwr-home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # else `uv sync` of torch & co. per run
        "HF_HUB_OFFLINE": "1",
        "FEDRP_GLUE_DIR": str(glue_dir),
    }


def write_connection(env: dict, name: str, address: str) -> None:
    """$FLWR_HOME/config.toml with one insecure SuperLink connection (the Control API's address)."""
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]", f'address = "{address}"',
             "insecure = true"]
    (Path(env["FLWR_HOME"]) / "config.toml").write_text("\n".join(lines) + "\n")


def app_dir(tmp_path: Path) -> Path:
    """The folder `flwr run` builds the app bundle from: the repository root, unless its
    pyproject.toml still has a legacy [tool.flwr.federations] table. `flwr run` 1.42 moves
    such a table into $FLWR_HOME/config.toml *and rewrites pyproject.toml in place* (commenting
    it out), so then the bundle is built from a copy of the app without it."""
    text = (ROOT / "pyproject.toml").read_text()
    if "[tool.flwr.federations" not in text:
        return ROOT
    app = tmp_path / "app"
    for package in ("fedrp", "clients", "server"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", app)
    (app / "pyproject.toml").write_text(text[: text.index("[tool.flwr.federations")])
    return app


def run_config(**values) -> str:
    """--run-config text; strings in TOML (JSON) quotes, keys with - for _."""
    return " ".join(f"{k.replace('_', '-')}={json.dumps(str(v)) if isinstance(v, (str, Path)) else v}"
                    for k, v in values.items())


def small_run(tmp_path: Path, glue_dir: Path, **overrides) -> dict:
    return {**dict(task="sst2", num_server_rounds=2, fraction_train=1.0, fraction_evaluate=0.0,
                   max_train_samples=480, max_train_samples_per_client=120, max_eval_samples=200, bf16="off",
                   partition_scheme="iid", round_timeout=300.0, data_dir=glue_dir,
                   store=tmp_path / "store.sqlite", checkpoint_dir=tmp_path / "checkpoints"), **overrides}


def flwr_run(procs: Processes, app: Path, connection: str, config: dict, *extra: str) -> None:
    """`flwr run ... --stream` until the run ends, then check that Flower saw it complete."""
    code, out = procs.run("flwr-run", ["flwr", "run", str(app), connection, "--run-config", run_config(**config),
                                       *extra, "--stream"], timeout=RUN_TIMEOUT)
    assert code == 0 and "Successfully started run" in out, out[-4000:]
    # `flwr run` exits 0 even when the ServerApp fails; the run's status says how it ended.
    code, out = procs.run("flwr-ls", ["flwr", "ls", connection, "--format", "json"], timeout=120)
    assert code == 0, out[-4000:]
    runs = json.loads(out[out.index("{"):])["runs"]
    assert len(runs) == 1, runs
    assert runs[0]["status"] == "finished:completed", \
        f"{runs[0]['status']}: {runs[0].get('status-details')}\n{procs.log('flwr-run')[-4000:]}"


def check_store(store_path: Path, num_clients: int, num_rounds: int, partitions: set | None = None) -> list[dict]:
    """The run completed; every round accepted every client's train reply of a few KB."""
    store = RunStore(store_path)
    try:
        (run_id,), = store.db.execute("SELECT id FROM runs").fetchall()
        run = store.run(run_id)
        assert run["status"] == "completed", run["error"]
        rounds = store.rounds(run_id)
        assert [r["round"] for r in rounds] == list(range(num_rounds + 1))
        for r in rounds[1:]:
            assert (r["accepted"], r["refused"]) == (num_clients, 0), r
        replies = [r for r in store.replies(run_id) if r["kind"] == "train"]
        assert len(replies) == num_clients * num_rounds
        assert all(r["status"] == "accepted" for r in replies), replies
        assert {r["partition_id"] for r in replies} == (partitions or set(range(num_clients)))
        assert all(0 < r["bytes"] <= MAX_REPLY_BYTES for r in replies), [r["bytes"] for r in replies]
        assert math.isfinite(rounds[-1]["server_metrics"]["accuracy"])
        return rounds
    finally:
        store.close()


# ---- keys --------------------------------------------------------------------------------

def make_node_key(path: Path) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format, as `ssh-keygen -t ecdsa -b 384` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = path.with_name(path.name + ".pub")
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b" fedrp-test\n")
    return path, public


# ---- the tests -----------------------------------------------------------------------------

@pytest.mark.slow
def test_simulation_engine_through_flwr_run(tmp_path, glue_dir):
    env = flower_env(tmp_path, glue_dir)
    (port,) = free_ports(1)
    write_connection(env, "local-sim", f"127.0.0.1:{port}")
    app = app_dir(tmp_path)
    with Processes(env, tmp_path, tmp_path / "logs") as procs:
        link = procs.start("superlink", ["flower-superlink", "--insecure", "--simulation",
                                         "--disable-runtime-dependency-installation", "--port", str(port)])
        wait_for_port(port, 60, procs, link)
        # Per-run simulation settings: --federation-config (the connection's `options.*` keys are
        # deprecated in 1.42; `flwr federation simulation-config` would store them in the SuperLink).
        # 480 examples per client: with 120 (4 steps a round) two rounds end below the untrained
        # model's 0.515 at the federated default rate. Two clients, one per core.
        flwr_run(procs, app, "local-sim", small_run(tmp_path, glue_dir, max_train_samples=960,
                                                     max_train_samples_per_client=480),
                 "--federation-config", "num-supernodes=2 client-resources-num-cpus=1")
    rounds = check_store(tmp_path / "store.sqlite", num_clients=2, num_rounds=2)
    assert_learned(rounds)


def write_local_data(folder: Path, glue_dir: Path) -> str:
    """A device's own SST-2 rows as JSON lines with label names, outside the GLUE partitions."""
    folder.mkdir(parents=True)
    rows = glue.load_split("sst2", "train", glue_dir).select(range(5000, 5480))
    names = glue.get_task("sst2").label_names
    for name, part in (("train.jsonl", rows), ("dev.jsonl", rows.select(range(100)))):
        with (folder / name).open("w") as f:
            for row in part:
                f.write(json.dumps({"text": row["text"], "label": names[row["label"]]}) + "\n")
    return f"data-file='{folder / 'train.jsonl'}' eval-file='{folder / 'dev.jsonl'}'"


@pytest.mark.slow
def test_deploy_local_script_with_tls_auth_own_data_and_an_unregistered_supernode(tmp_path, glue_dir):
    """The operator's script end to end on the deployment engine: TLS, SuperNode authentication,
    node 0 on a GLUE partition and node 1 on its own files, as a real device would; a SuperNode
    whose key was never registered asks for partition 0 too and is refused at activation (had it
    been let in, the run would see three nodes)."""
    env = flower_env(tmp_path, glue_dir)
    link_port, first_clientappio_port, _ = free_ports(3, consecutive=True)  # the script counts up
    (intruder_port,) = free_ports(1)
    work = tmp_path / "deploy"
    intruder_key, _ = make_node_key(tmp_path / "keys" / "unregistered")
    # 480 examples per client: with 2 x 240 the run ends at 0.520 against 0.515 untrained
    # (deterministic, and the same under run_simulation), too thin a margin; 2 x 480 gives 0.660.
    settings = {
        "WORKDIR": str(work), "GLUE_DIR": str(glue_dir), "NUM_NODES": "2", "ROUNDS": "2",
        "SUPERLINK_PORT": str(link_port), "CLIENTAPPIO_PORT": str(first_clientappio_port), "RUN_TIMEOUT": "500",
        "NODE_CONFIG_1": write_local_data(tmp_path / "device-1", glue_dir),
        "RUN_CONFIG": run_config(max_train_samples=960, max_train_samples_per_client=480, max_eval_samples=200,
                                 bf16="off", fraction_evaluate=0.0, round_timeout=300.0),
    }
    with Processes(env, tmp_path, tmp_path / "logs") as procs:
        script = procs.start("deploy_local", ["bash", str(ROOT / "simulations" / "deploy_local.sh")], env=settings)
        wait_for_port(link_port, 120, procs, script)
        intruder = procs.start("supernode-unregistered", [
            "flower-supernode", "--superlink", f"127.0.0.1:{link_port}",
            "--root-certificates", str(work / "certs" / "ca.crt"), "--auth-supernode-private-key", str(intruder_key),
            "--port", str(intruder_port), "--node-config", "partition-id=0 num-partitions=2"])
        try:
            script.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"deploy_local.sh ran past {RUN_TIMEOUT} s:\n{procs.log('deploy_local')[-6000:]}")
        out = procs.log("deploy_local")
        assert script.returncode == 0, out[-6000:]
        assert "run 1: completed" in out
        try:
            intruder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the unregistered SuperNode still runs:\n{procs.log('supernode-unregistered')[-4000:]}")

    # Refused at activation: the SuperNode gives up (Flower's exit code 305, process status 1)
    # and the SuperLink logs that it knows no such key.
    assert intruder.returncode != 0
    assert "Failed to activate SuperNode" in procs.log("supernode-unregistered")
    assert "No SuperNode found with the given public key" in (work / "logs" / "superlink.log").read_text()
    for i in (0, 1):  # each node's messages ran in its warm worker, not in a fresh process
        assert "train message of run" in (work / "logs" / f"worker-{i}.log").read_text()
    rounds = check_store(work / "store.sqlite", num_clients=2, num_rounds=2, partitions={0, None})
    assert_learned(rounds)
    store = RunStore(work / "store.sqlite")
    own = [r for r in store.replies(1) if r["partition_id"] is None]
    assert own and all(r["num_examples"] == 480 for r in own)  # every row of its own file
    store.close()
