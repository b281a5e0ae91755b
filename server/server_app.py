"""The Flower ServerApp: reads the run config and runs the validated, checkpointed round loop."""

from __future__ import annotations

import logging
import os

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrp.federation import FedConfig
from server.rounds import run_federation


def build_server_app(overrides: dict | None = None, results: list | None = None) -> ServerApp:
    """A ServerApp; `overrides` stand in for the run config where the engine passes none, and
    each finished run's summary is appended to `results` when given (in-process simulations)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        logging.getLogger("fedrp").setLevel(logging.INFO)
        cfg = FedConfig.from_run_config(context.run_config, overrides)
        if cfg.dashboard_port:
            from server.dashboard.app import TOKEN_ENV, start_in_thread

            start_in_thread(cfg.store, cfg.dashboard_host, cfg.dashboard_port, os.environ.get(TOKEN_ENV))
        result = run_federation(grid, cfg)
        if results is not None:
            results.append(result)

    return app


app = build_server_app()
