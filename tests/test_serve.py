"""`fedrp serve` as a user runs it: a real server process over a folder of adapters, driven by a real HTTP
client. Every answer equals `fedrp predict`'s for that adapter; concurrent requests of different tasks each get
their own task's answer; adapters come and go while it runs; bad requests get a 4xx with one line of JSON."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from fedrp import artifact
from fedrp.adapters import build_model, make_config
from fedrp.backbone import load_backbone
from fedrp.predict import predict
from tests.conftest import PAIRS, TEXTS

TASKS = [f"task{i}" for i in range(10)]


def _write(folder: Path, name: str, seed: int, method: str = "slash", backbone: str | None = None) -> Path:
    model = build_model(load_backbone(), make_config(method, d=64))
    with torch.no_grad():
        model.z.normal_(0, 30, generator=torch.Generator().manual_seed(seed))
        # logits of a trained head's size (a few units): fp32's rounding, which differs with the batch's size, stays
        # well under the 1e-5 the answers are held to
        model.head.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 1000))
    art = artifact.from_model(model, task="sst2", label_names=["neg", "pos"])
    model.detach_layers()
    if backbone:
        art = artifact.Artifact(**{**vars(art), "backbone": backbone})
    return artifact.save(art, folder / f"{name}.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    spare = tmp_path_factory.mktemp("spare")
    for i, name in enumerate(TASKS):
        _write(folder, name, i, "jrwarp" if i == 9 else "slash")
    proc, client = _start(folder, len(TASKS), "--scan-seconds", "0.2", "--max-texts", "8", "--max-body-bytes", "4096",
                          "--max-tokens", "64")
    yield client, folder, spare, proc
    client.close()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def _start(folder: Path, tasks: int, *options: str) -> tuple[subprocess.Popen, httpx.Client]:
    """`fedrp serve` over the folder on a free port, once it serves `tasks` adapters."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fedrp", "serve", "--adapters", str(folder), "--port", str(port),
                             *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.time() + 120
    while True:
        try:
            if client.get("/healthz").json()["tasks"] == tasks:
                return proc, client
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"fedrp serve did not come up: {proc.stdout.read()}")
        time.sleep(0.2)


def _expected(folder: Path, name: str, texts, pairs=None) -> list[dict]:
    model, art = artifact.load_model(folder / f"{name}.safetensors")
    try:
        return predict(model, art.label_names, texts, pairs)
    finally:
        model.detach_layers()


def test_every_served_answer_is_what_fedrp_predict_gives_for_that_adapter(server):
    client, folder, _, _ = server
    for name, pairs in (("task0", None), ("task3", PAIRS[:3]), ("task9", None)):  # task9 is JR-WARP
        reply = client.post("/v1/predict", json={"task": name, "texts": TEXTS[:3], **({"pairs": pairs} if pairs else {})})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["task"] == name and body["digest"] == artifact.load(folder / f"{name}.safetensors").metadata()[
            "tensors_sha256"]
        for got, want in zip(body["predictions"], _expected(folder, name, TEXTS[:3], pairs), strict=True):
            assert got["label"] == want["label"]
            assert max(abs(a - b) for a, b in zip(got["logits"], want["logits"])) <= 1e-5


def test_64_concurrent_clients_across_10_tasks_each_get_their_own_tasks_answer(server):
    client, folder, _, _ = server
    text = TEXTS[0]
    expected = {name: _expected(folder, name, [text])[0]["logits"] for name in TASKS}
    assert len({tuple(round(x, 3) for x in v) for v in expected.values()}) == len(TASKS)  # the tasks all differ

    def ask(i: int) -> tuple[str, list[float]]:
        name = TASKS[i % len(TASKS)]
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            reply = own.post("/v1/predict", json={"task": name, "texts": [text]})
        assert reply.status_code == 200, reply.text
        return name, reply.json()["predictions"][0]["logits"]

    def calls() -> float:
        lines = client.get("/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith("fedrp_serve_batch_examples_count")).split()[-1])

    before = calls()
    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    for name, logits in answers:
        assert max(abs(a - b) for a, b in zip(logits, expected[name])) <= 1e-5, name
    metrics = client.get("/metrics").text
    assert 'fedrp_serve_requests_total{status="200"}' in metrics and "fedrp_serve_tasks_loaded 10.0" in metrics
    assert calls() - before <= 48  # concurrent requests were answered together, not one call each


def _until(condition, seconds: float = 20.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "the server did not pick up the change"
        time.sleep(0.1)


def test_adapters_come_and_go_while_it_runs_and_a_foreign_one_is_refused_with_why(server):
    client, folder, spare, _ = server
    names = lambda: [t["task"] for t in client.get("/v1/tasks").json()["tasks"]]
    new = _write(spare, "late", 42)
    shutil.copy(new, folder / "late.safetensors.tmp")
    os.replace(folder / "late.safetensors.tmp", folder / "late.safetensors")  # as a trainer's atomic save lands
    _until(lambda: "late" in names())
    assert client.post("/v1/predict", json={"task": "late", "texts": [TEXTS[0]]}).status_code == 200
    (folder / "late.safetensors").unlink()
    _until(lambda: "late" not in names())
    assert client.post("/v1/predict", json={"task": "late", "texts": [TEXTS[0]]}).status_code == 404
    _write(folder, "foreign", 7, backbone="other/model")
    _until(lambda: "foreign" in client.get("/v1/tasks").json()["refused"])
    assert "was trained on backbone 'other/model'" in client.get("/v1/tasks").json()["refused"]["foreign"]
    assert "foreign" not in names()
    (folder / "foreign.safetensors").unlink()


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({"content": b"not json", "headers": {"content-type": "application/json"}}, 400, "the body is not JSON"),
    ({"json": {"task": "task0"}}, 400, '"texts" must be a non-empty list of strings'),
    ({"json": {"task": "task0", "texts": ["a", "b"], "pairs": ["c"]}}, 400, '"pairs", when given'),
    ({"json": {"task": "task0", "texts": ["a"], "extra": 1}}, 400, "unknown keys ['extra']"),
    ({"json": {"task": "nope", "texts": ["a"]}}, 404, "no task 'nope' is served"),
    ({"json": {"task": "task0", "texts": ["a"] * 9}}, 413, "9 texts in one request; at most 8"),
    ({"json": {"task": "task0", "texts": ["word " * 100]}}, 413, "tokens; at most 64 are accepted"),
    ({"json": {"task": "task0", "texts": ["x" * 5000]}}, 413, "bytes; at most 4,096 are accepted"),
])
def test_a_bad_request_gets_a_4xx_with_one_line_of_json(server, request_kwargs, status, message):
    client = server[0]
    reply = client.post("/v1/predict", **request_kwargs)
    assert reply.status_code == status and message in reply.json()["error"]
    assert "\n" not in reply.json()["error"]


def test_off_loopback_it_needs_a_token_and_refuses_before_the_model_loads(tmp_path, capsys):
    nowhere = str(tmp_path / "no-such-model")  # a backbone loaded before the refusal would fail on it instead
    res = subprocess.run([sys.executable, "-m", "fedrp", "serve", "--adapters", str(tmp_path), "--host", "0.0.0.0",
                          "--model", nowhere],
                         check=False, capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                              if k != "FEDRP_SERVE_TOKEN"})
    assert res.returncode == 2 and res.stderr.strip().endswith(
        "fedrp serve binds to 0.0.0.0, which is not loopback: give a token with --token or $FEDRP_SERVE_TOKEN, or "
        "bind to 127.0.0.1")
    # The other refusals in this process: the same main() as `python -m fedrp`, without seconds of imports each.
    from fedrp.cli import main
    assert main(["serve", "--adapters", str(tmp_path / "none")]) == 2
    assert "is not a folder: expected a folder of adapter files" in capsys.readouterr().err
    assert main(["serve", "--adapters", str(tmp_path), "--device", "gpu0", "--model", nowhere]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "device 'gpu0' is not a torch device: expected auto, cpu, cuda, cuda:N or mps")


def test_a_token_is_checked_on_every_request():
    from starlette.testclient import TestClient

    from fedrp.serving import TaskBank
    from server.inference.app import create_app

    app = create_app(TaskBank(load_backbone()), Path("/nonexistent-folder"), token="s3cret")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 401
        assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/healthz", headers={"Authorization": "Bearer s3cret"}).json()["status"] == "ok"


def test_sigint_during_a_batch_answers_the_batch_then_stops_cleanly(tmp_path):
    """Ctrl-C while a batch runs: the request in flight still gets its answer, the process exits 0, no traceback."""
    _write(tmp_path, "only", 0)
    proc, client = _start(tmp_path, 1, "--max-texts", "64")
    texts = [" ".join(TEXTS) * 2] * 64  # long texts: a batch of about a second on 2 cores
    with ThreadPoolExecutor(1) as pool:
        metrics = client.get("/metrics").text
        reply = pool.submit(client.post, "/v1/predict", json={"task": "only", "texts": texts})
        while "fedrp_serve_examples_in_flight 64.0" not in client.get("/metrics").text:  # the batch has started
            assert not reply.done(), reply.result().text
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert reply.result().status_code == 200 and len(reply.result().json()["predictions"]) == 64
    client.close()
    assert proc.wait(timeout=60) == 0
    out = proc.stdout.read()
    assert "Traceback" not in out and "Error" not in out, out
    assert "fedrp_serve_examples_in_flight 0.0" in metrics
