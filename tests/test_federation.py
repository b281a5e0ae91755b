"""The federation end to end through `simulations.run`: real apps, real backbone, real store.

Most runs use the in-process engine, which runs the very ServerApp and ClientApp of Flower's
simulation engine and ends on the same vector bit for bit (tests/test_inprocess.py, where the
one run on Flower's engine is also cut by Ctrl-C).
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from fedrp.federation import (
    FedConfig,
    client_train_data,
    federation_offsets,
    initial_state,
    label_counts,
    local_train,
    model_for,
    server_evaluate,
)
from server import checkpoint
from server.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# AdamW at 1e-2, constant, batches of 32: two rounds learn with it, where SLaSh's default (cosine over
# 20 rounds, batches of 8) is tuned for longer runs; the replays below use the same settings.
SMALL = ["--task", "sst2", "--max-train-samples", "480", "--max-train-samples-per-client", "80",
         "--max-eval-samples", "200", "--fraction-evaluate", "0.5", "--bf16", "off",
         "--local-optimizer", "adamw", "--lr", "0.01", "--batch-size", "32", "--lr-decay", "none"]


def simulate(tmp_path: Path, glue_dir, *args: str, supernodes: int = 4, wait: bool = True, engine: str = "inprocess"):
    """`python -m simulations.run ... --json`: its summary, or with wait=False the running process.

    A finished in-process run is called in this process: the same main() and output, without a
    fresh interpreter's seconds of importing torch, transformers and Flower each time."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {"FEDRP_GLUE_DIR": str(glue_dir), "HF_HUB_OFFLINE": "1", "FEDRP_STATE_DIR": str(tmp_path / "node-state")}
    argv = ["--num-supernodes", str(supernodes), "--json", "--store", str(tmp_path / "store.sqlite"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--engine", engine, *SMALL, *args]
    if wait and engine == "inprocess":
        return _in_this_process(argv, env)
    cmd = [sys.executable, "-m", "simulations.run", *argv]
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    if not wait:  # output to files: a chatty run would block on a full pipe nobody reads yet
        with open(tmp_path / "stdout.txt", "w") as out, open(tmp_path / "stderr.txt", "w") as err:
            return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err, start_new_session=True)
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _in_this_process(argv: list[str], env: dict) -> dict:
    """simulations.run's main() here, with the run's environment and without the log handler it adds."""
    from simulations.run import main

    server_log = logging.getLogger("fedrp.server")
    handlers = list(server_log.handlers)
    try:
        with mock.patch.dict(os.environ, env):
            result = main(argv)
    finally:
        for handler in set(server_log.handlers) - set(handlers):  # it writes to this test's captured stderr
            server_log.removeHandler(handler)
    return json.loads(json.dumps(result))  # as the process prints it: string keys, lists


def test_faulty_clients_are_refused_and_recorded(tmp_path, glue_dir):
    faults = "0:nan,1:wrong-fingerprint,2:scaled-1000,3:wrong-shape"
    out = simulate(tmp_path, glue_dir, "--num-server-rounds", "2", "--fraction-train", "1.0",
                   "--faulty-clients", faults, supernodes=6)  # no norm-bound: the default norm-ratio catches x1000
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    for r in out["rounds"][1:]:
        assert (r["accepted"], r["refused"]) == (2, 4)
        assert r["bytes_down"] == 6 * 7176  # z + head to every sampled client: a few KB each
        assert "accuracy" in r["client_metrics"]  # fraction-evaluate 0.5: the clients evaluated too
    reasons = {(r["partition_id"], r["reason"]) for r in out["refusals"]}
    assert reasons == {(0, "non-finite"), (1, "fingerprint-mismatch"), (2, "norm-outlier"), (3, "shape-mismatch")}
    assert np.isfinite(out["final_metrics"]["accuracy"])
    store = RunStore(out["store"])
    assert store.run(out["run_id"])["status"] == "completed"
    assert {r["bytes"] for r in store.replies(out["run_id"], "accepted")} == {7176}

    # The refused replies are left out: two rounds of the honest clients 4 and 5, replayed here, give the state.
    accepted = store.replies(out["run_id"], "accepted")
    assert {(r["round"], r["partition_id"]) for r in accepted} == {(n, p) for n in (1, 2) for p in (4, 5)}
    cfg = FedConfig(task="sst2", data_dir=str(glue_dir), max_train_samples=480, max_train_samples_per_client=80,
                    bf16="off", fraction_train=1.0, local_optimizer="adamw", lr=0.01, batch_size=32,
                    lr_decay="none")  # as SMALL
    tokenizer = model_for(cfg).tokenizer
    state = start = initial_state(cfg)
    for rnd in (1, 2):
        data = {pid: client_train_data(cfg, tokenizer, pid, 6) for pid in (4, 5)}
        new = {pid: local_train(cfg, state, data[pid], rnd, pid)[0] for pid in (4, 5)}
        w = [len(data[pid]) for pid in (4, 5)]
        state = {k: np.average([new[pid][k] for pid in (4, 5)], axis=0, weights=w) for k in state}
    _, got, _, _ = checkpoint.load(tmp_path / "ckpt" / f"run-{out['run_id']}")
    for k in state:
        assert np.max(np.abs(state[k] - start[k])) > 100 * 2e-6, k  # the rounds moved it far beyond the tolerance
        np.testing.assert_allclose(got[k], state[k], rtol=0, atol=2e-6, err_msg=k)


def test_server_evaluates_with_the_label_prior_the_clients_report(tmp_path, glue_dir):
    """Logit-adjusted clients train for a uniform prior; the server adds the log of the label mix they report
    (their counts summed, add-one smoothed) to the logits of every evaluation, round 0 included."""
    out = simulate(tmp_path, glue_dir, "--task", "mrpc", "--num-server-rounds", "1", "--fraction-train", "1.0",
                   "--fraction-evaluate", "0", supernodes=3)
    cfg = FedConfig(task="mrpc", data_dir=str(glue_dir), max_train_samples=480, max_train_samples_per_client=80,
                    max_eval_samples=200, bf16="off", local_optimizer="adamw", lr=0.01, batch_size=32,
                    lr_decay="none")  # as SMALL
    model = model_for(cfg)
    counts = np.sum([label_counts(client_train_data(cfg, model.tokenizer, pid, 3)["label"], 2) for pid in range(3)],
                    axis=0)
    assert counts.sum() == 240 and counts[1] > 1.5 * counts[0]  # MRPC: about two paraphrases to one
    expected = (counts + 1) / (counts.sum() + 2)
    assert out["label_prior"] == pytest.approx(expected.tolist(), abs=1e-4)
    offsets = federation_offsets([counts.tolist()])
    _, final, _, _ = checkpoint.load(tmp_path / "ckpt" / f"run-{out['run_id']}")
    for rnd, state in ((0, initial_state(cfg)), (1, final)):
        with_prior = server_evaluate(cfg, model, state, offsets)
        assert out["rounds"][rnd]["metrics"] == pytest.approx(with_prior, abs=1e-12), rnd
    assert with_prior != server_evaluate(cfg, model, final, None)  # the prior changed answers: the check can fail


def test_too_few_valid_replies_fail_the_run_cleanly(tmp_path, glue_dir):
    with pytest.raises(SystemExit, match="simulations.run: run failed: round 1: 1 valid replies, fewer than min-train-nodes 2"):
        simulate(tmp_path, glue_dir, "--num-server-rounds", "2", "--fraction-train", "1.0",
                 "--faulty-clients", "0:nan,1:nan", "--min-train-nodes", "2", supernodes=3)
    store = RunStore(tmp_path / "store.sqlite")
    run = store.run(1)
    assert run["status"] == "failed" and "fewer than min-train-nodes 2" in run["error"]
    assert [r["round"] for r in store.rounds(1)] == [0]  # round 1 was not aggregated
    assert {r["reason"] for r in store.replies(1, "refused")} == {"non-finite"}


def test_robust_aggregation_outvotes_a_scaled_update_and_records_a_crash(tmp_path, glue_dir):
    """No norm bound or ratio: the x1000 update is accepted, yet the coordinate-wise rule leaves it out;
    the crashing client is refused as a client error and the round goes on. Both robust rules are
    checked as units in tests/test_server_parts.py; this runs one of them through the real apps."""
    out = simulate(tmp_path, glue_dir, "--num-server-rounds", "1", "--fraction-train", "1.0", "--fraction-evaluate", "0",
                   "--aggregation", "trimmed-mean", "--trim-beta", "0.25", "--faulty-clients", "0:scaled-1000,1:error",
                   "--norm-ratio", "0", supernodes=5)
    (rnd,) = out["rounds"][1:]
    assert (rnd["accepted"], rnd["refused"]) == (4, 1)
    assert [(r["partition_id"], r["reason"]) for r in out["refusals"]] == [(1, "client-error")]
    assert "injected client failure" in out["refusals"][0]["detail"]
    store = RunStore(out["store"])
    assert [r["status"] for r in store.replies(out["run_id"]) if r["partition_id"] == 0] == ["accepted"]
    _, final, _, _ = checkpoint.load(tmp_path / "ckpt" / "run-1")
    moved = np.linalg.norm(final["z"] - initial_state(FedConfig())["z"])
    assert 0 < moved < 20.0  # one honest round moves z by a few units; the x1000 reply by thousands
    assert np.isfinite(out["final_metrics"]["accuracy"])


def test_dp_clients_keep_their_budget_across_rounds_in_node_state(tmp_path, glue_dir):
    """Sample-level DP on the clients and client-level DP on the server in one run."""
    out = simulate(tmp_path, glue_dir, "--num-server-rounds", "2", "--fraction-train", "1.0", "--fraction-evaluate", "0",
                   "--dp-epsilon", "4", "--max-train-samples-per-client", "64",
                   "--client-dp-noise", "0.5", "--client-dp-clip", "0.5", supernodes=2)
    assert out["status"] == "completed"
    assert out["client_dp_epsilon"] > 0  # all clients every round (rate 1): large, but accounted
    store = RunStore(out["store"])
    by_round = {}
    for r in store.replies(out["run_id"], "accepted"):
        by_round.setdefault(r["partition_id"], []).append(r["metrics"]["epsilon"])
    for pid, spent in by_round.items():  # node state carried round 1's accountant into round 2
        assert len(spent) == 2 and 0 < spent[0] < spent[1] <= 4.0, (pid, spent)
    assert out["epsilon_spent"] == {str(pid): spent[-1] for pid, spent in by_round.items()}
    assert len(list((tmp_path / "node-state").glob("dp-budget-*.json"))) == 2

    # Resumed from round 1, round 2 would be each client's third round of DP-SGD: the budget
    # files the first run left make both clients refuse it, so the resumed run cannot go on.
    with pytest.raises(SystemExit, match="simulations.run: run failed: round 2: 0 valid replies, fewer than min-train-nodes"):
        simulate(tmp_path, glue_dir, "--num-server-rounds", "2", "--fraction-train", "1.0", "--fraction-evaluate", "0",
                 "--dp-epsilon", "4", "--max-train-samples-per-client", "64",
                 "--client-dp-noise", "0.5", "--client-dp-clip", "0.5",
                 "--resume-from", str(tmp_path / "ckpt" / "run-1" / "round-0001.safetensors"), supernodes=2)
    resumed = store.run(2)
    assert resumed["status"] == "failed" and "fewer than min-train-nodes" in resumed["error"]
    refusals = store.replies(2, "refused")
    assert len(refusals) == 2 and all("privacy budget exhausted" in r["detail"] for r in refusals)
