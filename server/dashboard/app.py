"""The dashboard's web app: Starlette routes over a read-only run store, pages polling a JSON API.

Starlette (with uvicorn) is already installed with Flower's simulation extras; the charts are
plotly.js, served from the `plotly` PyPI package's own copy, so nothing comes from the internet.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from html import escape
from importlib import resources
from pathlib import Path

import plotly
import uvicorn
from starlette.applications import Starlette
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

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


def check_binding(host: str, token: str | None) -> None:
    """Loopback needs nothing; any other address needs a token, or anyone on the network could read the runs."""
    if not is_loopback(host) and not token:
        raise ValueError(f"the dashboard binds to {host}, which is not loopback: give a token with --token or "
                         f"${TOKEN_ENV}, or bind to 127.0.0.1")


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port}")


def create_app(store_path: str | Path, token: str | None = None) -> Starlette:
    """The app for one store file; with a token, every request must carry it (header or ?token=)."""
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

    def page(name: str):
        async def endpoint(request: Request) -> Response:
            try:
                open_store().close()
            except (FileNotFoundError, ValueError) as err:
                return HTMLResponse(_problem_page(str(err)), status_code=503)
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

    def rounds_json(request: Request, store: RunStore) -> Response:
        rows = views.rounds_table(store, run_id(request))
        return JSONResponse(rows, headers=_attachment(run_id(request), "json"))

    async def plotly_js(request: Request) -> Response:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    routes = [
        Route("/", page("index.html")),
        Route("/runs/{run_id:run_id}", page("run.html")),
        Route("/api/runs", api(lambda request, store: JSONResponse(views.run_list(store)))),
        Route("/api/runs/{run_id:run_id}",
              api(lambda request, store: JSONResponse(views.run_view(store, run_id(request))))),
        Route("/api/runs/{run_id:run_id}/rounds.csv", api(rounds_csv)),
        Route("/api/runs/{run_id:run_id}/rounds.json", api(rounds_json)),
        Route("/static/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=str(STATIC))),
    ]
    app = Starlette(routes=routes)
    if token:
        app.add_middleware(_TokenGate, token=token)
    return app


def _attachment(run_id: int, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="run-{run_id}-rounds.{ext}"'}


def _problem_page(message: str) -> str:
    return (f"<!doctype html><html><head><title>fedrp dashboard: no run store</title>"
            f"<link rel=stylesheet href=/static/dashboard.css></head><body><h1>fedrp dashboard</h1>"
            f"<p class=problem id=problem>{escape(message)}</p></body></html>")


class _TokenGate:
    """ASGI middleware: requests without the token get 401 (Bearer header, or ?token= for browsers)."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            header = request.headers.get("authorization", "").removeprefix("Bearer ")
            given = request.query_params.get("token") or header
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                response = PlainTextResponse(
                    "this dashboard needs its token: ?token=... or 'Authorization: Bearer ...'", status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(store_path: str | Path, host: str = "127.0.0.1", port: int = 8050, token: str | None = None) -> None:
    """Serve until interrupted."""
    check_port(port)
    check_binding(host, token)
    log.warning("fedrp dashboard on http://%s:%d/ over %s", host, port, store_path)
    uvicorn.run(create_app(store_path, token), host=host, port=port, log_level="warning")


def start_in_thread(store_path: str | Path, host: str, port: int, token: str | None) -> uvicorn.Server:
    """Serve beside a running ServerApp, in a daemon thread that ends with the process."""
    check_port(port)
    check_binding(host, token)
    server = uvicorn.Server(uvicorn.Config(create_app(store_path, token), host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="fedrp-dashboard", daemon=True).start()
    log.info("fedrp dashboard on http://%s:%d/ over %s", host, port, store_path)
    return server
