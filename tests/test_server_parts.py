"""The server's parts on their own: config, sampling, store, checkpoints, aggregation rules."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import tomllib

from fedrp.faults import parse_faults
from fedrp.federation import FedConfig, round_seed
from fedrp.federation.config import sample_partitions as sample
from fedrp.methods import RATES
from server import checkpoint
from server.store import RunStore
from server.strategy import FedAdamRP, from_record, make_strategy, to_record

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_matches_the_defaults():
    """`flwr run .` and `python -m simulations.run` must start from the same settings."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert list(config.items()) == list(FedConfig().to_run_config().items())  # in the config's order
    assert FedConfig.from_run_config(config) == FedConfig()


def test_run_config_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown run-config key 'rounds'"):
        FedConfig.from_run_config({"rounds": 3})
    with pytest.raises(ValueError, match="'num-server-rounds' expects int"):
        FedConfig.from_run_config({"num-server-rounds": "many"})
    with pytest.raises(ValueError, match=r"aggregation must be one of \['fedavg', 'fedavgm', 'fedprox', 'scaffold', 'feddyn', 'fedadam', 'fedyogi', 'median', 'trimmed-mean'\]"):
        make_strategy(FedConfig.from_run_config({"aggregation": "krum"}))  # the server's vocabulary
    with pytest.raises(ValueError, match="PARTITION:KIND"):
        FedConfig.from_run_config({"faulty-clients": "0:melt"})
    with pytest.raises(ValueError, match="local-loss must be one of"):
        FedConfig.from_run_config({"local-loss": "focal"})
    with pytest.raises(ValueError, match=r"server-momentum must be in \[0, 1\), got 1.0"):
        FedConfig.from_run_config({"server-momentum": 1.0})  # rate 1 - momentum = 0: the model would never move
    assert FedConfig.from_run_config({"lr": 0.0, "method": "full"}).learning_rate == RATES["full"].federated == 1e-4
    assert FedConfig.from_run_config({"lr": 0.5}).learning_rate == 0.5


def test_clients_report_label_counts_only_where_no_guarantee_forbids_it():
    """The counts set the prior the server evaluates a logit-adjusted model with; under sample-level DP,
    client-level DP or SecAgg+ they would be exact data released outside the guarantee, so none are sent."""
    assert FedConfig().reports_label_counts
    for off in ({"dp-epsilon": 4.0}, {"client-dp-noise": 0.5}, {"secure-aggregation": "secagg+"},
                {"local-loss": "ce"}, {"eval-prior": "uniform"}, {"task": "stsb"}):
        assert not FedConfig.from_run_config(off).reports_label_counts, off


def test_fault_spec_parses():
    assert parse_faults("0:nan, 3:wrong-fingerprint,5:scaled-1000") == {0: "nan", 3: "wrong-fingerprint", 5: "scaled-1000"}
    assert parse_faults("") == {}


def test_sampling_is_seeded_by_round_and_respects_fraction():
    parts = list(range(10))
    a = sample(parts, 0.5, 2, seed=0, rnd=3, stream=0)
    assert len(a) == 5 and a == sample(parts, 0.5, 2, seed=0, rnd=3, stream=0)
    assert a != sample(parts, 0.5, 2, seed=0, rnd=4, stream=0) or a != sample(parts, 0.5, 2, seed=1, rnd=3, stream=0)
    assert len(sample(parts, 0.05, 2, 0, 1, 0)) == 2
    assert sample(parts, 1.0, 2, 0, 1, 0) == parts
    assert round_seed(0, 1, 2) == round_seed(0, 1, 2) != round_seed(0, 2, 2)
    assert a == [3, 6, 7, 8, 9]  # the same choice as before node ids could be mixed in: resumed runs agree
    mixed = [0, 16268211478151602176, 2**63 - 25]  # a partition id beside uint64 node ids (own-data nodes)
    assert sorted(sample(mixed, 1.0, 1, 0, 1, 0)) == sorted(mixed)
    assert set(sample(mixed, 0.5, 1, 0, 1, 0)) <= set(mixed)


def test_store_records_runs_rounds_and_replies(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.start_run("sst2", "slash", "bb", {"k": 1}, "{}", "ab" * 32, 3)
    store.add_round(run, 0, {"accuracy": 0.5})
    store.add_round(run, 1, {"accuracy": 0.7}, {"train-loss": 0.4}, {}, 100, 200, 4, 1, 1.5)
    store.add_replies(run, 1, "train", [
        {"node_id": 7, "partition_id": 2, "status": "accepted", "bytes": 20, "num_examples": 5.0, "metrics": {"a": 1}},
        {"node_id": 8, "partition_id": 3, "status": "refused", "reason": "non-finite", "detail": "z holds 1"},
    ])
    store.end_run(run, "completed")
    assert store.run(run)["status"] == "completed"
    assert [r["server_metrics"]["accuracy"] for r in store.rounds(run)] == [0.5, 0.7]
    refused = store.replies(run, "refused")
    assert len(refused) == 1 and refused[0]["reason"] == "non-finite" and refused[0]["partition_id"] == 3
    assert sqlite3.connect(tmp_path / "runs.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # reopening keeps everything
    assert RunStore(tmp_path / "runs.sqlite").rounds(run)[1]["bytes_up"] == 100


def _files(path) -> dict[str, bytes | None]:
    """The database and its -wal and -shm companions, byte for byte (None where absent)."""
    return {s: p.read_bytes() if (p := Path(f"{path}{s}")).exists() else None for s in ("", "-wal", "-shm", "-journal")}


@pytest.mark.parametrize("journal", ["delete", "wal"])
@pytest.mark.parametrize("tables", [["CREATE TABLE mine (x)"],
                                    ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
                                     "INSERT INTO meta VALUES ('owner', 'another app')"]])
def test_store_refuses_a_foreign_sqlite_file_without_touching_it(tmp_path, journal, tables):
    """Another application's database, even one with a meta(key, value) table of its own, is left byte for byte."""
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal}")
    for sql in tables:
        db.execute(sql)
    db.commit()
    db.close()
    before = _files(path)
    with pytest.raises(ValueError, match="is not a fedrp run store: it has no 'fedrp-run-store' mark"):
        RunStore(path)
    assert _files(path) == before


def test_store_refuses_a_file_that_is_not_sqlite_and_reopens_its_own(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    with pytest.raises(ValueError, match="it is not an SQLite file"):
        RunStore(text)
    assert text.read_text() == "not a database"
    with pytest.raises(ValueError, match="is a folder"):
        RunStore(tmp_path)
    ours = RunStore(tmp_path / "runs.sqlite")
    run = ours.start_run("sst2", "slash", "bb", {}, None, None, 1)
    reopened = RunStore(tmp_path / "runs.sqlite")  # while the first is open: its -wal file exists
    assert reopened.run(run)["status"] == "running"
    ours.close()
    reopened.close()
    assert RunStore(tmp_path / "runs.sqlite").run(run)["task"] == "sst2"


def test_a_new_store_appears_only_with_its_mark_and_a_concurrent_creator_keeps_its_own(tmp_path, monkeypatch):
    from server import store

    path = tmp_path / "runs.sqlite"
    monkeypatch.setattr(store, "SCHEMA", store.SCHEMA + "CREATE TABLE broken (;")  # creation fails half-way
    with pytest.raises(sqlite3.OperationalError):
        RunStore(path)
    assert list(tmp_path.iterdir()) == []  # no unmarked (or half-made) store for a reader to find
    monkeypatch.undo()

    first = RunStore(path)
    run = first.start_run("sst2", "slash", "bb", {}, None, None, 1)
    store.create(path)  # another server lost the race: the existing store is kept
    assert RunStore(path).run(run)["task"] == "sst2"
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    RunStore(empty).start_run("rte", "slash", "bb", {}, None, None, 1)
    assert store.foreign_reason(empty) is None


def test_checkpoints_round_trip_and_resume_from_the_newest(tmp_path):
    state = {"z": np.arange(4, dtype=np.float32)}
    server = {"m_t/z": np.ones(4, np.float32)}
    checkpoint.save(tmp_path, 1, state, server, {"fingerprint": "f"})
    checkpoint.save(tmp_path, 2, {"z": state["z"] * 2}, server, {"fingerprint": "f"})
    rnd, loaded, loaded_server, meta = checkpoint.load(tmp_path)
    assert rnd == 2 and np.array_equal(loaded["z"], state["z"] * 2) and meta["fingerprint"] == "f"
    assert np.array_equal(loaded_server["m_t/z"], server["m_t/z"])
    assert checkpoint.load(tmp_path / "round-0001.safetensors")[0] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "empty")


def test_fedadam_state_survives_a_checkpoint():
    strategy = make_strategy(FedConfig(aggregation="fedadam", fraction_evaluate=0.0))
    assert isinstance(strategy, FedAdamRP)
    strategy.m_t = {"z": np.full(3, 0.5, np.float32)}
    strategy.v_t = {"z": np.full(3, 0.25, np.float32)}
    saved = strategy.server_state()
    fresh = make_strategy(FedConfig(aggregation="fedadam", fraction_evaluate=0.0))
    fresh.load_server_state(saved)
    assert np.array_equal(fresh.m_t["z"], strategy.m_t["z"]) and np.array_equal(fresh.v_t["z"], strategy.v_t["z"])


def test_a_run_whose_process_was_killed_is_marked_interrupted_by_the_next_start(tmp_path):
    """SIGKILL leaves no chance to write 'interrupted': the next writer sees that the process is gone."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "runs.sqlite"
    code = ("import sys, time; from server.store import RunStore; s = RunStore(sys.argv[1]);"
            "print(s.start_run('sst2', 'slash', 'bb', {}, None, None, 5), flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    killed = int(child.stdout.readline())
    store = RunStore(path)
    alive = store.start_run("sst2", "slash", "bb", {}, None, None, 5)  # this process: alive
    assert store.mark_orphans() == []  # the child still runs
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert store.run(killed)["status"] == "running"
    assert store.mark_orphans() == [killed]
    run = store.run(killed)
    assert run["status"] == "interrupted" and f"its server process {child.pid} ended" in run["error"]
    assert store.run(alive)["status"] == "running" and store.mark_orphans() == []


def test_norm_ratio_refuses_a_runaway_update_and_spares_skewed_honest_ones():
    from fedrp.payload import norm_outliers

    assert list(norm_outliers([0.8, 1.0, 1.3, 1000.0], 10.0)) == [3]
    assert "update norm 1000 is 870x the round's median 1.15 (norm-ratio 10)" in norm_outliers([0.8, 1.0, 1.3, 1000.0], 10.0)[3]
    assert norm_outliers([0.2, 1.0, 1.9], 10.0) == {}  # label skew: honest norms a few times apart
    # SST-2 at Dirichlet 0.1 with local SGD (a tuning round): three nearly one-class clients barely moved,
    # two mixed ones 11x and 15x the median. Ratio 10 refused them; 100, the grid's setting there, spares them.
    assert list(norm_outliers([0.15, 0.15, 0.1496, 1.609, 2.185], 10.0)) == [3, 4]
    assert norm_outliers([0.15, 0.15, 0.1496, 1.609, 2.185], 100.0) == {}
    assert list(norm_outliers([0.15, 0.15, 0.1496, 1.609, 1000.0], 100.0)) == [4]
    assert norm_outliers([1.0, 1000.0], 10.0) == {}  # two replies: no median to trust
    assert norm_outliers([1.0, 1.0, 1000.0], 0.0) == {}  # off
    with pytest.raises(ValueError, match="norm-ratio must be 0"):
        FedConfig(norm_ratio=0.5)


def _replies(strategy, sent: dict, updates: dict, rnd: int = 1, examples: dict | None = None, **prepare) -> list:
    """One round's replies as Flower delivers them: a state per partition, an error for a crashed client
    (None), or a refusal (a string: its reason); each reports `examples[pid]` examples (default 10).
    `prepare` passes the strategy's checks (client_dp, norm_ratio)."""
    from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

    from fedrp.refusals import REFUSED

    strategy.prepare({100 + pid: pid for pid in updates}, seed=0, fingerprint="f", norm_bound=0.0, **prepare)
    replies = []
    for msg in strategy.configure_train(rnd, to_record(sent), ConfigRecord(), grid=None):
        msg.metadata.__dict__["_message_id"] = msg.object_id  # as the grid sets it when the message is pushed
        pid = strategy.nodes[msg.metadata.dst_node_id]
        update = updates[pid]
        if update is None:
            replies.append(Message(Error(code=0, reason="RuntimeError: injected client failure"), reply_to=msg))
            continue
        if isinstance(update, str):
            replies.append(Message(Error(code=REFUSED, reason=update), reply_to=msg))
            continue
        content = RecordDict({"arrays": to_record(update),
                              "metrics": MetricRecord({"num-examples": (examples or {}).get(pid, 10)}),
                              "meta": ConfigRecord({"fingerprint": "f"})})
        replies.append(Message(content, reply_to=msg))
    return replies


@pytest.fixture
def in_a_server_app(monkeypatch):
    """Replies can be built only where Flower believes it runs a ServerApp."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value)


def test_fedavgm_steps_along_the_momentum_of_the_rounds_and_a_resumed_run_keeps_it(in_a_server_app):
    """x_t = x_{t-1} - (1 - b) m_t with m_t = b m_{t-1} + (x_{t-1} - mean of the replies); the momentum is
    checkpointed, so a strategy restarted from round 1's checkpoint ends round 2 on the same vector."""
    beta, rng = 0.9, np.random.default_rng(1)
    cfg = FedConfig(aggregation="fedavgm", server_momentum=beta, fraction_train=1.0, fraction_evaluate=0.0)
    x0 = {"z": rng.normal(size=5).astype(np.float32), "head.weight": rng.normal(size=(2, 3)).astype(np.float32)}
    steps = [{pid: {k: rng.normal(size=v.shape).astype(np.float32) for k, v in x0.items()} for pid in (0, 1)}
             for _ in range(2)]

    def round_of(strategy, rnd, x):
        updates = {pid: {k: x[k] + d[k] for k in x} for pid, d in steps[rnd - 1].items()}
        arrays, _ = strategy.aggregate_train(rnd, _replies(strategy, x, updates, rnd))
        return from_record(arrays)

    strategy = make_strategy(cfg)
    x1 = round_of(strategy, 1, x0)
    saved = {k: v.copy() for k, v in strategy.server_state().items()}
    x2 = round_of(strategy, 2, x1)
    m1 = {k: -(steps[0][0][k] + steps[0][1][k]) / 2 for k in x0}
    m2 = {k: beta * m1[k] - (steps[1][0][k] + steps[1][1][k]) / 2 for k in x0}
    for k, start in x0.items():
        np.testing.assert_allclose(x1[k], start - (1 - beta) * m1[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(x2[k], x1[k] - (1 - beta) * m2[k], rtol=1e-5, atol=1e-6)
    assert sorted(saved) == ["momentum/head.weight", "momentum/z"]
    resumed = make_strategy(cfg)
    resumed.load_server_state(saved)
    again = round_of(resumed, 2, x1)
    assert all(np.array_equal(again[k], x2[k]) for k in x0)


def test_fedavgm_at_momentum_0_with_a_server_step_moves_past_the_clients_average(in_a_server_app):
    """x_1 = x_0 + step * (mean of the replies - x_0): FedAvg's move, scaled by the server's step."""
    rng = np.random.default_rng(2)
    cfg = FedConfig(aggregation="fedavgm", server_momentum=0.0, server_step=3.0, fraction_train=1.0,
                    fraction_evaluate=0.0)
    x0 = {"z": rng.normal(size=5).astype(np.float32), "head.weight": rng.normal(size=(2, 3)).astype(np.float32)}
    updates = {pid: {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in x0.items()} for pid in (0, 1)}
    strategy = make_strategy(cfg)
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, x0, updates))
    x1 = from_record(arrays)
    for k, start in x0.items():
        mean = (updates[0][k] + updates[1][k]) / 2
        np.testing.assert_allclose(x1[k], start + 3.0 * (mean - start), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="server-step must be a positive number, got 0.0"):
        FedConfig(aggregation="fedavgm", server_step=0.0)


@pytest.mark.parametrize("aggregation", ["median", "trimmed-mean"])
def test_robust_rules_outvote_a_scaled_update_and_refuse_a_crash(aggregation, in_a_server_app):
    """Six sampled clients: one sends x1000, one crashes, one refuses the round; the rule takes the middle of
    the four accepted, and the crash and the refusal are stored apart."""
    rng = np.random.default_rng(0)
    sent = {"z": np.zeros(6, np.float32), "head.weight": np.zeros((2, 3), np.float32)}
    honest = {pid: {k: rng.normal(size=v.shape).astype(np.float32) for k, v in sent.items()} for pid in (2, 3, 4)}
    updates = {0: {k: 1000 * v for k, v in honest[2].items()}, 1: None, **honest, 5: "budget exhausted"}
    strategy = make_strategy(FedConfig(aggregation=aggregation, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1,
                                     trim_beta=0.25))
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, sent, updates))
    got = from_record(arrays)
    assert [(r["partition_id"], r["status"], r.get("reason")) for r in strategy.records] == [
        (0, "accepted", None), (1, "refused", "client-error"), (2, "accepted", None), (3, "accepted", None),
        (4, "accepted", None), (5, "refused", "client-refused")]
    for k in sent:  # of four values per coordinate, both rules keep the mean of the middle two
        middle = np.sort(np.stack([updates[p][k] for p in (0, 2, 3, 4)]), axis=0)[1:3].mean(axis=0)
        np.testing.assert_allclose(got[k], middle, rtol=1e-6, err_msg=k)
        assert np.abs(got[k]).max() < 10  # the x1000 update (thousands) left out


def test_a_first_ctrl_c_under_flowers_engine_only_asks_the_server_to_stop_and_a_second_forces():
    # Raising at the first one unwinds Flower's engine while its workers wait on Ray (exit status 1).
    from server.stopping import STOP
    from simulations.run import _stop_on_interrupt

    STOP.clear()
    try:
        try:
            _stop_on_interrupt(2, None)
        except KeyboardInterrupt:
            pytest.fail("the first Ctrl-C raised instead of asking the server to stop")
        assert STOP.is_set()
        with pytest.raises(KeyboardInterrupt):
            _stop_on_interrupt(2, None)
    finally:
        STOP.clear()


def _steps(rng, sent: dict, scales: dict[int, float]) -> dict[int, dict]:
    """Per partition, sent + a random update of L2 norm `scale` (over all arrays)."""
    out = {}
    for pid, scale in scales.items():
        step = {k: rng.normal(size=v.shape) for k, v in sent.items()}
        norm = np.sqrt(sum(np.sum(v ** 2) for v in step.values()))
        out[pid] = {k: (sent[k] + scale * step[k] / norm).astype(np.float32) for k in sent}
    return out


def test_fedavg_weights_each_reply_by_its_examples(in_a_server_app):
    """Clients of 10, 30 and 60 examples: the aggregate is the example-weighted mean, 0.6 of the way to the
    largest client's state, not the plain mean (a third of the way)."""
    sent = {"z": np.zeros(4, np.float32), "head.weight": np.zeros((2, 3), np.float32)}
    updates = {pid: {k: np.full(v.shape, float(pid + 1), np.float32) for k, v in sent.items()} for pid in (0, 1, 2)}
    strategy = make_strategy(FedConfig(fraction_train=1.0, fraction_evaluate=0.0))
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, sent, updates, examples={0: 10, 1: 30, 2: 60}))
    for k, v in from_record(arrays).items():
        np.testing.assert_allclose(v, (1 * 10 + 2 * 30 + 3 * 60) / 100, rtol=1e-6, err_msg=k)  # 2.5; plain mean 2.0


def test_the_strategy_leaves_a_runaway_update_out_of_the_mean(in_a_server_app):
    """norm-ratio inside aggregate_train: a reply scaled 1000x is refused as an outlier, recorded, and the
    others' mean is the aggregate; with the guard off it would dominate."""
    rng = np.random.default_rng(3)
    sent = {"z": np.zeros(8, np.float32), "head.weight": np.zeros((2, 4), np.float32)}
    updates = _steps(rng, sent, {0: 1.0, 1: 1.2, 2: 0.8, 3: 1000.0})
    strategy = make_strategy(FedConfig(fraction_train=1.0, fraction_evaluate=0.0))
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, sent, updates, norm_ratio=10.0))
    assert [(r["partition_id"], r["status"], r.get("reason")) for r in strategy.records] == [
        (0, "accepted", None), (1, "accepted", None), (2, "accepted", None), (3, "refused", "norm-outlier")]
    for k, v in from_record(arrays).items():
        np.testing.assert_allclose(v, np.mean([updates[p][k] for p in (0, 1, 2)], axis=0), rtol=1e-5, err_msg=k)


def test_client_level_dp_clips_each_update_and_averages_with_equal_weights(in_a_server_app):
    """DP-FedAvg's sensitivity: every update is clipped to C as a whole, the clients weigh the same whatever
    examples they report, and the sum is divided by the m sampled (a crashed one included), not by the
    replies. With almost no noise the aggregate is exactly that; the plain weighted FedAvg of these replies
    (norms 10 and 0.3) lies about 7 away from it."""
    from fedrp.privacy.client_level import ClientLevelDP

    rng = np.random.default_rng(4)
    sent = {"z": rng.normal(size=16).astype(np.float32), "head.weight": rng.normal(size=(2, 6)).astype(np.float32)}
    updates = {**_steps(rng, sent, {0: 10.0, 1: 0.3, 2: 10.0}), 3: None}
    dp = ClientLevelDP(noise_multiplier=1e-9, clip=1.0, delta=1e-5)
    strategy = make_strategy(FedConfig(fraction_train=1.0, fraction_evaluate=0.0))
    replies = _replies(strategy, sent, updates, examples={0: 5, 1: 50, 2: 500}, client_dp=dp)
    got = from_record(strategy.aggregate_train(1, replies)[0])
    scale = {0: 0.1, 1: 1.0, 2: 0.1}  # C / norm where the norm exceeds C
    for k, start in sent.items():
        want = start + sum(scale[p] * (updates[p][k] - start) for p in scale) / 4
        np.testing.assert_allclose(got[k], want, atol=1e-5, err_msg=k)


def test_client_level_dp_noise_has_std_sigma_c_over_m_and_is_never_the_same_twice(in_a_server_app):
    """N(0, (sigma C / m)^2) per coordinate: over 20,000 coordinates the measured std is within 3% of
    sigma C / m = 0.125 (its sampling error is 0.5%); a noise without the 1/m, or none, is 4x off or 0.
    Two aggregations of the same replies differ: the noise is fresh, not drawn from the run seed."""
    from fedrp.privacy.client_level import ClientLevelDP

    sent = {"z": np.zeros(20_000, np.float32)}
    updates = {pid: {"z": np.zeros(20_000, np.float32)} for pid in range(4)}  # no update: the noise alone
    dp = ClientLevelDP(noise_multiplier=1.0, clip=0.5, delta=1e-5)
    strategy = make_strategy(FedConfig(fraction_train=1.0, fraction_evaluate=0.0))
    draws = [from_record(strategy.aggregate_train(1, _replies(strategy, sent, updates, client_dp=dp))[0])["z"]
             for _ in range(2)]
    for z in draws:
        assert abs(float(np.std(z)) / 0.125 - 1) < 0.03, np.std(z)
        assert abs(float(np.mean(z))) < 0.01
    assert not np.array_equal(draws[0], draws[1])


def test_each_reply_records_its_update_norms_cosine_and_weight_as_computed_directly(in_a_server_app, tmp_path):
    """The store keeps, per reply, the update's norm (z apart from the head), its cosine with the round's
    aggregate update and its weight in it; a refused reply whose arrays fit gets its norms too, no weight."""
    rng = np.random.default_rng(3)
    sent = {"z": rng.normal(size=5).astype(np.float32), "head.weight": rng.normal(size=(2, 3)).astype(np.float32),
            "head.bias": np.zeros(2, np.float32)}
    updates = {pid: {k: (v + rng.normal(size=v.shape)).astype(np.float32) for k, v in sent.items()} for pid in (0, 1, 2)}
    updates[3] = {k: np.full(v.shape, np.nan, np.float32) for k, v in sent.items()}
    strategy = make_strategy(FedConfig(fraction_train=1.0, fraction_evaluate=0.0))
    examples = {0: 10, 1: 30, 2: 60, 3: 10}
    arrays, _ = strategy.aggregate_train(1, _replies(strategy, sent, updates, examples=examples))
    aggregate = from_record(arrays)
    strategy.describe_updates(aggregate)
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.start_run("sst2", "slash", "bb", {}, "{}", "ab" * 32, 1)
    store.add_replies(run, 1, "train", strategy.records)
    rows = {r["partition_id"]: r for r in store.replies(run)}
    for pid in (0, 1, 2):
        delta = {k: updates[pid][k].astype(np.float64) - sent[k] for k in sent}
        agg = np.concatenate([(aggregate[k].astype(np.float64) - sent[k]).ravel() for k in sent])
        flat = np.concatenate([delta[k].ravel() for k in sent])
        assert rows[pid]["norm_vector"] == pytest.approx(np.linalg.norm(delta["z"]), rel=1e-9)
        assert rows[pid]["norm_head"] == pytest.approx(np.sqrt(np.sum(delta["head.weight"] ** 2)
                                                               + np.sum(delta["head.bias"] ** 2)), rel=1e-9)
        assert rows[pid]["cosine"] == pytest.approx(flat @ agg / np.linalg.norm(flat) / np.linalg.norm(agg), rel=1e-9)
        assert rows[pid]["weight"] == pytest.approx(examples[pid] / 100)
    assert rows[3]["status"] == "refused" and rows[3]["weight"] is None and rows[3]["norm_vector"] is None
    assert rows[2]["cosine"] > rows[0]["cosine"]  # the heaviest reply pulls the aggregate towards itself
