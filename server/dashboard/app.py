"""The dashboard's web app: Starlette routes over a read-only run store, pages polling a JSON API.

Starlette (with uvicorn) is already installed with Flower's simulation extras; the charts are
plotly.js, served from the `plotly` PyPI package's own copy, so nothing comes from the internet.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
from html import escape
from importlib import resources
from pathlib import Path

import plotly
import uvicorn
from starlette.applications import Starlette
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.dashboard import views
from server.store import RunStore

log = logging.getLogger("fedrp.dashboard")
STATIC = resources.files("server.dashboard") / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
TOKEN_ENV = "FEDRP_DASHBOARD_TOKEN"


class RunIdConvertor(IntegerConvertor):
    """A run id in a URL: at most 19 digits (SQLite's INTEGER), so that a longer one is a 404 and never
    reaches int(), which refuses strings past 4,300 digits with a ValueError (a 500 and a traceback)."""

    regex = "[0-9]{1,19}"


register_url_convertor("run_id", RunIdConvertor())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None, what: str = "the dashboard", env: str = TOKEN_ENV) -> None:
    """Loopback needs nothing; any other address needs a token, or anyone on the network could read the runs
    (or, for `fedrp serve`, query the models)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"{what} binds to {host}, which is not loopback: give a token with --token or "
                         f"${env}, or bind to 127.0.0.1")


def check_port(port: int) -> None:
    """A port out of range is one line from fedrp, not an OverflowError from the socket layer."""
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound as uvicorn binds it but before uvicorn starts: a busy port or an unknown
    host is then one line and exit 2 from `fedrp dashboard`, where uvicorn would log and exit 1."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(_bind_problem(host, port, err)) from None
    sock.set_inheritable(True)
    return sock


def _bind_problem(host: str, port: int, err: OSError) -> str:
    """What a failed bind means to the person who typed --host and --port."""
    if isinstance(err, socket.gaierror):
        return f"--host {host} does not resolve ({err.strerror}); expected an address or a name of this machine"
    if err.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; expected a free port (--port)"
    return f"cannot listen on {host}:{port} ({err.strerror}); expected an address of this machine (--host)"


def create_app(store_path: str | Path, token: str | None = None) -> Starlette:
    """The app for one store file; with a token, every request must carry it (?token=, header or cookie)."""
    store_path = Path(store_path)
    logged: set[str] = set()

    def open_store() -> RunStore:
        try:
            return RunStore.open_readonly(store_path)
        except (FileNotFoundError, ValueError) as err:
            if str(err) not in logged:  # once per problem, not once per poll
                logged.add(str(err))
                log.warning("dashboard: %s", err)
            raise

    def api(view):
        async def endpoint(request: Request) -> Response:
            try:
                store = open_store()
            except (FileNotFoundError, ValueError) as err:
                return JSONResponse({"error": str(err)}, status_code=503)
            try:
                return view(request, store)
            except ValueError as err:  # an unknown run id
                return JSONResponse({"error": str(err)}, status_code=404)
            finally:
                store.close()
        return endpoint

    def page(name: str, of_a_run: bool = False):
        async def endpoint(request: Request) -> Response:
            try:
                store = open_store()
            except (FileNotFoundError, ValueError) as err:
                return HTMLResponse(_problem_page("no run store", str(err)), status_code=503)
            try:
                if of_a_run:  # an unknown run is a 404, as its API is
                    store.run(run_id(request))
            except ValueError as err:
                return HTMLResponse(_problem_page("no such run", str(err)), status_code=404)
            finally:
                store.close()
            return HTMLResponse((STATIC / name).read_text())
        return endpoint

    def run_id(request: Request) -> int:
        value = int(request.path_params["run_id"])
        if value >= 2**63:  # past SQLite's INTEGER (19 digits can be): no such run, rather than an OverflowError (500)
            raise ValueError(f"no run {value}")
        return value

    def rounds_csv(request: Request, store: RunStore) -> Response:
        rows = views.rounds_table(store, run_id(request))
        return PlainTextResponse(views.to_csv(rows), media_type="text/csv", headers=_attachment(run_id(request), "csv"))

    def replies_csv(request: Request, store: RunStore) -> Response:
        rows = views.replies_table(store, run_id(request))
        return PlainTextResponse(views.to_csv(rows), media_type="text/csv",
                                 headers=_attachment(run_id(request), "csv", "replies"))

    def rounds_json(request: Request, store: RunStore) -> Response:
        rows = views.rounds_table(store, run_id(request))
        return JSONResponse(rows, headers=_attachment(run_id(request), "json"))

    def compared(request: Request) -> list[int]:
        """The run ids of ?runs=1,2,...: at least one, each a stored run (else ValueError: a 404)."""
        raw = request.query_params.get("runs", "")
        ids = [int(x) for x in raw.split(",") if x.strip().isdigit() and len(x.strip()) <= 19]
        if not ids or len(ids) != len([x for x in raw.split(",") if x.strip()]):
            raise ValueError(f"?runs= must list run ids, as ?runs=1,2; got {raw!r}")
        return ids

    def compare_json(request: Request, store: RunStore) -> Response:
        return JSONResponse(views.compare(store, compared(request)))

    def compare_csv(request: Request, store: RunStore) -> Response:
        rows = views.compare_rows(views.compare(store, compared(request)))
        return PlainTextResponse(views.to_csv(rows), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="compare.csv"'})

    async def plotly_js(request: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    routes = [
        Route("/", page("index.html")),
        Route("/runs/{run_id:run_id}", page("run.html", of_a_run=True)),
        Route("/compare", page("compare.html")),
        Route("/api/compare", api(compare_json)),
        Route("/api/compare.csv", api(compare_csv)),
        Route("/api/runs", api(lambda request, store: JSONResponse(views.run_list(store)))),
        Route("/api/runs/{run_id:run_id}",
              api(lambda request, store: JSONResponse(views.run_view(store, run_id(request))))),
        Route("/api/runs/{run_id:run_id}/rounds.csv", api(rounds_csv)),
        Route("/api/runs/{run_id:run_id}/replies.csv", api(replies_csv)),
        Route("/api/runs/{run_id:run_id}/rounds.json", api(rounds_json)),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=str(STATIC))),
    ]
    app = Starlette(routes=routes)
    if token:
        app.add_middleware(_TokenGate, token=token)
    return app


def _attachment(run_id: int, ext: str, what: str = "rounds") -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="run-{run_id}-{what}.{ext}"'}


def _problem_page(title: str, message: str) -> str:
    return (f"<!doctype html><html><head><title>fedrp dashboard: {escape(title)}</title>"
            f"<link rel=stylesheet href=/static/dashboard.css></head><body><h1>fedrp dashboard</h1>"
            f"<p class=problem id=problem>{escape(message)}</p></body></html>")


COOKIE = "fedrp-dashboard-{port}"  # cookies ignore ports: one name per port keeps two dashboards apart


def bearer(header: str) -> str:
    """The token of an `Authorization: Bearer T` header ("" for any other scheme); RFC 7235 makes the
    scheme case-insensitive, so `bearer T` counts too."""
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def cookie_value(token: str) -> str:
    """What the browser keeps: derived from the token, so the cookie store never holds the token itself."""
    return hmac.new(token.encode(), b"fedrp dashboard cookie", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison, so response times do not leak how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


class _TokenGate:
    """ASGI middleware: requests without the token get 401. A browser gives it once (?token=) and gets an
    HttpOnly, SameSite=Strict cookie, which its page's scripts, styles and API calls then carry; other clients
    send ?token= or `Authorization: Bearer`."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token, self.cookie = app, token, cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        name = COOKIE.format(port=(scope.get("server") or ("", ""))[1])
        query = request.query_params.get("token")
        given = query or bearer(request.headers.get("authorization", ""))
        if not (_same(given, self.token) if given else _same(request.cookies.get(name, ""), self.cookie)):
            response = PlainTextResponse(
                "this dashboard needs its token: open it once with ?token=..., or send 'Authorization: Bearer ...'",
                status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, _setting_cookie(send, name, self.cookie) if query else send)


def _setting_cookie(send: Send, name: str, value: str) -> Send:
    """`send` with the cookie added to the response: only after the ?token= given was right."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).append("set-cookie", f"{name}={value}; HttpOnly; SameSite=Strict; Path=/")
        await send(message)
    return wrapped


def listen(host: str, port: int, token: str | None, what: str = "the dashboard", env: str = TOKEN_ENV) -> socket.socket:
    """Every refusal of an address (port, host, token), then its bound socket."""
    check_port(port)
    check_binding(host, token, what, env)
    return bind(host, port)


def serve(store_path: str | Path, host: str = "127.0.0.1", port: int = 8050, token: str | None = None) -> None:
    """Serve until interrupted; every refusal (port, host, token) comes before uvicorn starts."""
    sock = listen(host, port, token)
    log.warning("fedrp dashboard on http://%s:%d/ over %s", host, port, store_path)
    server = uvicorn.Server(uvicorn.Config(create_app(store_path, token), host=host, port=port, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is how it stops: no traceback (uvicorn.run swallows it too)
        pass


def start_in_thread(store_path: str | Path, host: str, port: int, token: str | None) -> uvicorn.Server:
    """Serve beside a running ServerApp, in a daemon thread that ends with the process; a port in use is
    refused here, before the first round, not logged by uvicorn's thread while the run goes on."""
    sock = listen(host, port, token)
    server = uvicorn.Server(uvicorn.Config(create_app(store_path, token), host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fedrp-dashboard", daemon=True).start()
    log.info("fedrp dashboard on http://%s:%d/ over %s", host, port, store_path)
    return server
