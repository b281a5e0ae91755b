"""The in-process engine runs the same apps as Flower's simulation engine and ends on the same vector;
the one run here on Flower's engine is cut by Ctrl-C, which must take Ray's workers down in seconds."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from server import checkpoint
from server.store import RunStore
from tests.test_federation import simulate

pytestmark = pytest.mark.slow

# Three rounds, three of four non-IID clients a round, FedAdam (server state), client evaluation on.
CASE = ["--num-server-rounds", "3", "--fraction-train", "0.75", "--partition-scheme", "dirichlet", "--alpha", "0.5",
        "--aggregation", "fedadam"]


def round_state(folder, run_id: int, rnd: int) -> dict:
    """The global and server state that a run checkpointed after round `rnd`."""
    _, state, server_state, _ = checkpoint.load(str(folder / "ckpt" / f"run-{run_id}" / f"round-{rnd:04d}.safetensors"))
    return {**state, **server_state}


def metrics(stored_round: dict) -> tuple:
    """What a round computed (server and client evaluation, train loss), without its timings."""
    return (stored_round["server_metrics"], stored_round["eval_metrics"], stored_round["train_metrics"].get("train-loss"))


@pytest.fixture
def threads_of_a_ray_client():
    """Torch at the one thread a Ray client actor gets (cpus-per-client 1): sums split over two threads
    differ from one thread's in the last bits on some CPUs (AVX-512 here), so bit-for-bit needs the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_flower_engine_cut_by_ctrl_c_matches_inprocess_bit_for_bit_and_resumes_to_the_same_vector(
        tmp_path, glue_dir, threads_of_a_ray_client):
    whole = simulate(tmp_path / "whole", glue_dir, *CASE)
    assert whole["status"] == "completed" and [r["accepted"] for r in whole["rounds"][1:]] == [3, 3, 3]

    proc = simulate(tmp_path / "cut", glue_dir, *CASE, wait=False, engine="flower")
    target = tmp_path / "cut" / "ckpt" / "run-1" / "round-0001.safetensors"
    deadline = time.time() + 600
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # into round 2, while Flower's workers wait on the clients in Ray
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
    start = time.time()
    assert proc.wait(timeout=90) == 130, (tmp_path / "cut" / "stderr.txt").read_text()[-3000:]
    assert time.time() - start < 45  # not the 600 s round timeout
    err = (tmp_path / "cut" / "stderr.txt").read_text().strip().splitlines()
    assert err[-1].startswith("simulations.run: interrupted: run 1 interrupted: stopped on request after round")
    assert "Traceback" not in "\n".join(err)
    store = RunStore(tmp_path / "cut" / "store.sqlite")
    run = store.run(1)
    rnd, _, _, _ = checkpoint.load(tmp_path / "cut" / "ckpt" / "run-1")
    assert rnd in (1, 2) and run["status"] == "interrupted"  # stopped mid-run
    assert run["error"] == f"stopped on request after round {rnd}; resume-from {tmp_path / 'cut' / 'ckpt' / 'run-1'}"

    # Up to the cut, Flower's engine and the in-process one agree on every bit and every metric.
    for n in range(1, rnd + 1):
        flower, inproc = round_state(tmp_path / "cut", 1, n), round_state(tmp_path / "whole", whole["run_id"], n)
        assert sorted(flower) == sorted(inproc) and "z" in flower and "m_t/z" in flower
        for name, value in flower.items():
            assert np.array_equal(value, inproc[name]), (n, name)  # every bit, not a tolerance
    assert not np.array_equal(round_state(tmp_path / "whole", whole["run_id"], 1)["z"],
                              round_state(tmp_path / "whole", whole["run_id"], 2)["z"])  # the clients trained
    assert [metrics(r) for r in store.rounds(1)] == [metrics(r) for r in RunStore(whole["store"]).rounds(1)[:rnd + 1]]

    resumed = simulate(tmp_path / "cut", glue_dir, *CASE, "--resume-from", str(tmp_path / "cut" / "ckpt" / "run-1"))
    assert resumed["status"] == "completed"
    assert [r["round"] for r in resumed["rounds"]] == list(range(rnd + 1, 4))
    final = round_state(tmp_path / "cut", resumed["run_id"], 3)
    for name, value in round_state(tmp_path / "whole", whole["run_id"], 3).items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
