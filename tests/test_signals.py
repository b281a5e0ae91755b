"""SIGTERM (kill, timeout, systemd, batch schedulers, Kubernetes) stops a run as Ctrl-C does, on both engines:
the store says `interrupted` with the round to resume from, the exit status is 143, and no traceback.
(Ctrl-C on Flower's engine: tests/test_inprocess.py.)"""

import signal
import time

import pytest

from server.store import RunStore
from tests.test_federation import simulate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["inprocess", "flower"])
def test_sigterm_records_the_run_as_interrupted_and_exits_143(tmp_path, glue_dir, engine):
    # 30 rounds: the signal comes in round 1 or 2, never after a run that has already ended (rounds take a second)
    proc = simulate(tmp_path, glue_dir, "--num-server-rounds", "30", "--fraction-evaluate", "0", supernodes=2,
                    wait=False, engine=engine)
    first = tmp_path / "ckpt" / "run-1" / "round-0001.safetensors"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # `kill PID`: the process alone, not its group
    start = time.time()
    err = (tmp_path / "stderr.txt")
    assert proc.wait(timeout=90) == 143, err.read_text()[-3000:]
    assert time.time() - start < 45
    lines = err.read_text().strip().splitlines()
    assert lines[-1].startswith("simulations.run: interrupted: run 1 interrupted: stopped on request after round")
    assert "Traceback" not in "\n".join(lines)
    run = RunStore.open_readonly(tmp_path / "store.sqlite").run(1)
    assert run["status"] == "interrupted" and "resume-from" in run["error"]
