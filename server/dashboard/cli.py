"""`fedrp dashboard`: registered through the `fedrp.commands` entry point, so fedrp/ never imports server/."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("dashboard", _serve, "Serve the live aggregation dashboard over a run store (read-only).")
    p.add_argument("--store", required=True, help="the run store (SQLite) a fedrp server writes")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs a token")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--token", default=None, help="required token (default: $FEDRP_DASHBOARD_TOKEN)")


def _serve(args: argparse.Namespace) -> None:
    from server.dashboard.app import TOKEN_ENV, serve

    serve(args.store, args.host, args.port, args.token or os.environ.get(TOKEN_ENV))
