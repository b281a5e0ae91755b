"""`fedrp serve`'s web app: one backbone, a folder of adapters, and requests of any task batched together.

Requests wait in one queue; a worker takes what arrived within `max_wait` of the first (up to `max_batch`
examples) and answers it in one call of fedrp.serving.TaskBank, whose forward passes mix tasks. The
folder is scanned every `scan_seconds`: a new or changed adapter file is loaded (its digest checked), a
removed one unloaded, and one that cannot be served is logged with why, once. Every refusal of a request
is a 4xx with one line of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fedrp.serving import TaskBank
from server.dashboard.app import bearer
from server.inference.limits import Limits

log = logging.getLogger("fedrp.serve")
TOKEN_ENV = "FEDRP_SERVE_TOKEN"


class Refused(Exception):
    """A request that gets a 4xx: its status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """Prometheus series of one app (its own registry, so two apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fedrp_serve_requests", "predict requests by HTTP status", ["status"],
                                registry=self.registry)
        self.examples = Counter("fedrp_serve_examples", "texts answered", registry=self.registry)
        self.batch = Histogram("fedrp_serve_batch_examples", "examples per batched call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=self.registry)
        self.latency = Histogram("fedrp_serve_request_seconds", "time from a request's arrival to its answer",
                                 registry=self.registry)
        self.tasks = Gauge("fedrp_serve_tasks_loaded", "adapters loaded", registry=self.registry)
        self.in_flight = Gauge("fedrp_serve_examples_in_flight", "examples in the batched call running now",
                               registry=self.registry)


class Adapters:
    """The folder's adapter files kept in step with the bank: name = file stem."""

    def __init__(self, bank: TaskBank, folder: Path, lock: threading.Lock, metrics: Metrics) -> None:
        self.bank, self.folder, self.lock, self.metrics = bank, folder, lock, metrics
        self.seen: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) of the file that was read
        self.refused: dict[str, str] = {}  # name -> why its file is not served

    def scan(self) -> None:
        files = {p.stem: p for p in sorted(self.folder.glob("*.safetensors")) if p.is_file()}
        for name in [n for n in self.seen if n not in files]:
            with self.lock:
                if name in self.bank.tasks:
                    self.bank.remove(name)
            del self.seen[name]
            self.refused.pop(name, None)
            log.info("unloaded %s: its file is gone", name)
        for name, path in files.items():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            version = (stat.st_mtime_ns, stat.st_size)
            if self.seen.get(name) == version:
                continue
            self.seen[name] = version
            try:
                with self.lock:
                    task = self.bank.add(name, path)
            except (OSError, ValueError, KeyError) as err:
                with self.lock:
                    if name in self.bank.tasks:  # a changed file that no longer loads: stop serving the old one
                        self.bank.remove(name)
                self.refused[name] = str(err).splitlines()[0]
                log.warning("not serving %s: %s", path, self.refused[name])
                continue
            self.refused.pop(name, None)
            log.info("serving %s (%s, digest %s)", name, task.kind[0], task.digest[:12])
        self.metrics.tasks.set(len(self.bank.tasks))


class Batcher:
    """One queue of requests; a worker answers what arrives together in one TaskBank call."""

    def __init__(self, bank: TaskBank, lock: threading.Lock, limits: Limits, metrics: Metrics) -> None:
        self.bank, self.lock, self.limits, self.metrics = bank, lock, limits, metrics
        self.queue: asyncio.Queue | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedrp-serve")

    async def answer(self, task: str, texts: list[str], pairs: list[str] | None) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((task, texts, pairs, future))
        return await asyncio.wait_for(future, self.limits.timeout)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0][1]), loop.time() + self.limits.max_wait
            while size < self.limits.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[1])
            batch = [item for item in batch if not item[3].done()]  # a request that timed out meanwhile
            if not batch:
                continue
            tasks = [t for task, texts, _, _ in batch for t in [task] * len(texts)]
            texts = [x for _, t, _, _ in batch for x in t]
            pairs = [x for _, t, p, _ in batch for x in (p if p is not None else [None] * len(t))]
            self.metrics.in_flight.set(len(texts))
            try:
                answers = await loop.run_in_executor(self.executor, self._predict, tasks, texts, pairs)
            except Exception as err:  # noqa: BLE001 - every waiting request gets the failure, the worker lives on
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            finally:
                self.metrics.in_flight.set(0)
            self.metrics.batch.observe(len(texts))
            start = 0
            for _, t, _, future in batch:
                if not future.done():
                    future.set_result(answers[start:start + len(t)])
                start += len(t)

    def _predict(self, tasks: list[str], texts: list[str], pairs: list[str | None]) -> list[dict]:
        with self.lock:
            return self.bank.predict(tasks, texts, pairs, self.limits.max_length)


def create_app(bank: TaskBank, folder: str | Path, limits: Limits | None = None, token: str | None = None) -> Starlette:
    """The app over a bank and its folder (scanned once here, before the first request, then every
    `limits.scan_seconds`); with a token, every request must carry it (`Authorization: Bearer`)."""
    limits = limits or Limits()
    lock, metrics = threading.Lock(), Metrics()
    adapters = Adapters(bank, Path(folder), lock, metrics)
    adapters.scan()
    batcher = Batcher(bank, lock, limits, metrics)
    tokenizer = bank.backbone.tokenizer

    async def scanning() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(limits.scan_seconds)
            await loop.run_in_executor(None, adapters.scan)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.queue = asyncio.Queue()
        workers = [asyncio.create_task(batcher.run()), asyncio.create_task(scanning())]
        yield
        for worker in workers:
            worker.cancel()

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        try:
            task, texts, pairs = parse(await _body(request, limits.max_body_bytes))
            if task not in bank.tasks:
                raise Refused(404, f"no task {task!r} is served; GET /v1/tasks lists them")
            _check_lengths(tokenizer, texts, pairs, limits)
            try:
                answers = await batcher.answer(task, texts, pairs)
            except asyncio.TimeoutError:
                raise Refused(504, f"no answer within {limits.timeout:g} s; the server is busy") from None
            except KeyError as err:  # unloaded between the check and the batch
                raise Refused(404, str(err).strip("'\"")) from None
        except Refused as err:
            metrics.requests.labels(str(err.status)).inc()
            return JSONResponse({"error": str(err)}, status_code=err.status)
        metrics.requests.labels("200").inc()
        metrics.examples.inc(len(texts))
        metrics.latency.observe(time.perf_counter() - start)
        return JSONResponse({"task": task, "digest": answers[0]["digest"],
                             "predictions": [{k: v for k, v in a.items() if k not in ("task", "digest")}
                                             for a in answers]})

    async def tasks(request: Request) -> Response:
        with lock:
            listed = [{"task": t.name, "digest": t.digest, "method": t.kind[0], "labels": list(t.label_names)}
                      for t in sorted(bank.tasks.values(), key=lambda t: t.name)]
        return JSONResponse({"tasks": listed, "refused": dict(sorted(adapters.refused.items()))})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "tasks": len(bank.tasks)})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(routes=[Route("/v1/predict", predict, methods=["POST"]), Route("/v1/tasks", tasks),
                            Route("/healthz", healthz), Route("/metrics", prometheus)], lifespan=lifespan)
    if token:
        app.add_middleware(BearerGate, token=token)
    return app


def parse(body: bytes) -> tuple[str, list[str], list[str] | None]:
    """{"task": name, "texts": [...], "pairs": [...]?} as (task, texts, pairs), or a 400 naming what was expected."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, 'the body is not JSON: expected {"task": NAME, "texts": [TEXT, ...]}') from None
    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise Refused(400, 'expected a JSON object with "task" (a name) and "texts" (a list of strings)')
    texts, pairs = data.get("texts"), data.get("pairs")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise Refused(400, '"texts" must be a non-empty list of strings')
    if pairs is not None and (not isinstance(pairs, list) or len(pairs) != len(texts)
                              or not all(isinstance(p, str) for p in pairs)):
        raise Refused(400, '"pairs", when given, must be a list of strings as long as "texts"')
    unknown = sorted(set(data) - {"task", "texts", "pairs"})
    if unknown:
        raise Refused(400, f"unknown keys {unknown}: expected task, texts and optionally pairs")
    return data["task"], texts, pairs


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) once it passes `limit` bytes, whatever its Content-Length says."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body passes {limit:,} bytes; at most {limit:,} are accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_lengths(tokenizer, texts: list[str], pairs: list[str] | None, limits: Limits) -> None:
    if len(texts) > limits.max_texts:
        raise Refused(413, f"{len(texts)} texts in one request; at most {limits.max_texts} are accepted")
    for i, text in enumerate(texts):
        tokens = len(tokenizer(text, pairs[i] if pairs else None, add_special_tokens=True)["input_ids"])
        if tokens > limits.max_tokens:
            raise Refused(413, f"text {i} is {tokens} tokens; at most {limits.max_tokens} are accepted")


class BearerGate:
    """ASGI middleware: a request without `Authorization: Bearer <token>` gets 401 (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = bearer(Request(scope).headers.get("authorization", ""))
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                response = JSONResponse({"error": "this server needs its token: send 'Authorization: Bearer ...'"},
                                        status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
