"""The in-process engine runs the same apps as Flower's simulation engine and ends on the same vector."""

import numpy as np
import pytest

from server import checkpoint
from tests.test_federation import simulate

pytestmark = pytest.mark.slow

# Two rounds, three of four non-IID clients a round, FedAdam (server state), client evaluation on.
CASE = ["--num-server-rounds", "2", "--fraction-train", "0.75", "--partition-scheme", "dirichlet", "--alpha", "0.5",
        "--aggregation", "fedadam", "--max-train-samples", "240", "--max-train-samples-per-client", "0"]


def final_state(tmp_path, glue_dir, engine: str) -> tuple[dict, dict]:
    out = simulate(tmp_path / engine, glue_dir, *CASE, engine=engine)
    _, state, server_state, _ = checkpoint.load(str(tmp_path / engine / "ckpt" / f"run-{out['run_id']}"))
    return out, {**state, **server_state}


def test_inprocess_engine_gives_flowers_global_vector_bit_for_bit(tmp_path, glue_dir):
    flower, flower_state = final_state(tmp_path, glue_dir, "flower")
    inproc, inproc_state = final_state(tmp_path, glue_dir, "inprocess")
    assert sorted(flower_state) == sorted(inproc_state) and "z" in flower_state
    for name, value in flower_state.items():
        assert np.array_equal(value, inproc_state[name]), name  # every bit, not a tolerance
    assert [r["metrics"] for r in flower["rounds"]] == [r["metrics"] for r in inproc["rounds"]]
    assert [r["accepted"] for r in inproc["rounds"][1:]] == [3, 3]
    # the clients trained: the vector moved away from its initial value in both engines
    assert not np.array_equal(checkpoint_round(tmp_path / "inprocess", inproc["run_id"], 1)["z"], inproc_state["z"])


def checkpoint_round(folder, run_id: int, rnd: int) -> dict:
    _, state, _, _ = checkpoint.load(str(folder / "ckpt" / f"run-{run_id}" / f"round-{rnd:04d}.safetensors"))
    return state
