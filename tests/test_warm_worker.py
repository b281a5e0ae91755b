"""The thin ClientApp (clients.warm) and its warm worker (clients.worker) give the real app's replies.

Flower's deployment engine starts a process per message; with `worker-socket` in the node config
the thin app hands each message to a long-lived worker that keeps torch and the model loaded.
One worker runs here as a real process; what comes back through it is compared with the real
ClientApp (clients.client_app) called in this process.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    DEFAULT_TTL,
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    Metadata,
    RecordDict,
)

from clients import client_app, warm
from fedrp.federation import FedConfig, client_train_data, identity, initial_state, label_counts, model_for

ROOT = Path(__file__).resolve().parents[1]
NODE = 7
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TIMED = {"train-seconds", "samples-per-second"}  # metrics that measure the machine, not the round


@pytest.fixture(scope="module")
def worker(tmp_path_factory, glue_dir):
    """A worker's socket. It lives in a short folder of its own (a Unix socket's path ends at 107
    bytes); on the way out SIGTERM must end the worker with status 0 and without its socket."""
    folder = Path(tempfile.mkdtemp(prefix="fedrp-w-"))
    path = folder / "w.sock"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    # FEDRP_CACHE: the session's tmp dir (conftest), so the worker reuses the partitions this process cached
    env = {**os.environ, **OFFLINE, "FEDRP_GLUE_DIR": str(glue_dir), "FEDRP_CACHE": os.environ["FEDRP_CACHE"]}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clients.worker", "--socket", str(path)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not path.is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no worker socket (status {proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-4000:]
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def tiny(glue_dir: Path, **changes) -> FedConfig:
    return FedConfig(task="sst2", data_dir=str(glue_dir), max_train_samples=160, max_train_samples_per_client=16,
                     d=64, bf16="off", **changes)


def node_context(run_config: dict, socket: Path | None = None) -> Context:
    node = {"partition-id": 2, "num-partitions": 4} | ({warm.SOCKET_KEY: str(socket)} if socket else {})
    return Context(run_id=1, node_id=NODE, node_config=node, state=RecordDict(), run_config=run_config)


def server_message(content: RecordDict, message_type: str) -> Message:
    """A message from the ServerApp to node 7, its id set as Flower sets it before a ClientApp sees it."""
    msg = Message(content=content, metadata=Metadata(
        run_id=1, message_id="", src_node_id=1, dst_node_id=NODE, reply_to_message_id="", group_id="3",
        created_at=time.time(), ttl=DEFAULT_TTL, message_type=message_type))
    msg.metadata.__dict__["_message_id"] = msg.object_id
    return msg


def query() -> Message:
    return server_message(RecordDict({"config": ConfigRecord({"ask": "partition"})}), MessageType.QUERY)


def train(cfg: FedConfig, rnd: int = 1) -> Message:
    config = {**identity(model_for(cfg)), "server-round": rnd, "lr": 0.01, "local-epochs": 1.0}
    arrays = ArrayRecord({k: Array(v) for k, v in initial_state(cfg).items()})
    return server_message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), MessageType.TRAIN)


def not_here(message: Message, context: Context) -> Message:
    """Stands in for the real app in this process once the direct reply is known: the worker must answer."""
    raise AssertionError("the real ClientApp ran in the test process, not in the worker")


def test_the_socket_is_for_its_user_only(worker):
    assert stat.S_IMODE(worker.stat().st_mode) == 0o600


def test_a_query_through_the_worker_gets_the_real_apps_reply(worker, glue_dir, monkeypatch):
    msg, run_config = query(), tiny(glue_dir).to_run_config()
    want = client_app.app(msg, node_context(run_config))
    monkeypatch.setattr(client_app, "app", not_here)
    got = warm.app(message=msg, context=node_context(run_config, worker))
    cfg = tiny(glue_dir)
    counts = label_counts(client_train_data(cfg, model_for(cfg).tokenizer, 2, 4)["label"], 2)
    assert sum(counts) == 16  # the partition's examples, what the server's label prior sums
    assert dict(got.content["partition"]) == dict(want.content["partition"]) == {"partition-id": 2,
                                                                                 "num-partitions": 4,
                                                                                 "label-counts": counts}
    assert got.metadata.reply_to_message_id == msg.metadata.message_id != ""
    assert (got.metadata.src_node_id, got.metadata.dst_node_id, got.metadata.message_type, got.metadata.group_id) \
        == (NODE, 1, MessageType.QUERY, "3")


def test_a_train_round_through_the_worker_is_bit_identical(worker, glue_dir, monkeypatch):
    cfg = tiny(glue_dir)
    want = client_app.app(train(cfg), node_context(cfg.to_run_config()))
    monkeypatch.setattr(client_app, "app", not_here)
    got = warm.app(train(cfg), node_context(cfg.to_run_config(), worker))
    assert not want.has_error() and not got.has_error(), (want.error if want.has_error() else got.error)
    sent = initial_state(cfg)
    assert set(got.content["arrays"]) == set(want.content["arrays"]) == set(sent)
    for k in sent:
        np.testing.assert_array_equal(got.content["arrays"][k].numpy(), want.content["arrays"][k].numpy(), err_msg=k)
    assert any(not np.array_equal(got.content["arrays"][k].numpy(), sent[k]) for k in sent)  # it trained
    assert dict(got.content["meta"]) == dict(want.content["meta"])
    untimed = [{k: v for k, v in m.content["metrics"].items() if k not in TIMED} for m in (got, want)]
    assert untimed[0] == untimed[1] and untimed[0]["num-examples"] > 0


def test_the_node_state_the_app_keeps_travels_to_the_worker_and_back(worker, glue_dir, monkeypatch):
    """DP-SGD's accounting lives in the node state: round 2 through the worker must count on from
    round 1's spending (run here) and leave the total in the Context object the thin app was given."""
    cfg = tiny(glue_dir, dp_epsilon=8.0)
    direct = node_context(cfg.to_run_config())
    assert not client_app.app(train(cfg), direct).has_error()
    first = dict(direct.state.config_records[client_app.BUDGET_KEY])
    assert sum(first["steps"]) > 0
    forwarded = node_context(cfg.to_run_config(), worker)
    forwarded.state[client_app.BUDGET_KEY] = ConfigRecord(first)
    monkeypatch.setattr(client_app, "app", not_here)
    assert not warm.app(train(cfg, rnd=2), forwarded).has_error()
    # The label counts' release (round 1 only), then both rounds at the same noise and rate: one entry, twice the steps.
    assert first["steps"][0] == 1 and first["counts"]
    assert dict(forwarded.state.config_records[client_app.BUDGET_KEY]) == {
        **first, "steps": [1, 2 * first["steps"][1]]}


def test_an_app_error_comes_back_as_one_line_and_the_worker_serves_on(worker, glue_dir):
    run_config = {**tiny(glue_dir).to_run_config(), "no-such-key": 1}
    failing = server_message(RecordDict({"config": ConfigRecord({})}), MessageType.TRAIN)
    with pytest.raises(ValueError, match="unknown run-config key 'no-such-key'") as direct:
        client_app.app(failing, node_context(run_config))
    context = node_context(run_config, worker)
    with pytest.raises(RuntimeError) as forwarded:
        warm.app(failing, context)
    assert str(forwarded.value) == f"ValueError: {direct.value}"
    assert "\n" not in str(forwarded.value) and "Traceback" not in str(forwarded.value)
    assert context.state == RecordDict()
    got = warm.app(query(), node_context(tiny(glue_dir).to_run_config(), worker))
    assert dict(got.content["partition"])["partition-id"] == 2


def test_without_a_worker_socket_the_thin_app_runs_the_real_app_here(glue_dir):
    run_config = tiny(glue_dir).to_run_config()
    msg = query()
    want = client_app.app(msg, node_context(run_config))
    got = warm.app(msg, node_context(run_config))
    assert dict(got.content["partition"]) == dict(want.content["partition"])
    assert got.metadata.reply_to_message_id == msg.metadata.message_id


def test_no_worker_at_the_socket_is_one_clear_error(tmp_path):
    missing = tmp_path / "none.sock"
    with pytest.raises(RuntimeError, match=f"no warm worker answers at {missing}.*python -m clients.worker"):
        warm.app(query(), node_context({}, missing))
