"""`fedrp serve`: registered through the `fedrp.commands` entry point, so fedrp/ never imports server/."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path

from fedrp.spec import TrainOptions
from server.inference.limits import Limits

log = logging.getLogger("fedrp.serve")


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("serve", _serve, "Answer predictions over HTTP for every adapter in a folder, on one backbone.")
    p.add_argument("--adapters", required=True, help="folder of adapter files (<task>.safetensors); watched: a file "
                                                     "added is served, one removed is unloaded")
    p.add_argument("--model", default=None, help="the backbone (default: the one the adapters name, else the "
                                                 "packaged all-MiniLM-L6-v2)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs a token")
    p.add_argument("--port", type=int, default=8060)
    p.add_argument("--token", default=None, help="required bearer token (default: $FEDRP_SERVE_TOKEN)")
    device = next(f for f in dataclasses.fields(TrainOptions) if f.name == "device")  # its default and help, once
    p.add_argument("--device", default=device.default, help=f"{device.metadata['help']}: where the backbone and every "
                                                            "task's vectors and heads are kept")
    for f in dataclasses.fields(Limits):  # each limit's default and help, stated once in Limits
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                       help=f"{f.metadata['help']} (default {f.default})")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from server.dashboard.app import listen
    from server.inference.app import TOKEN_ENV, create_app

    folder = Path(args.adapters)
    if not folder.is_dir():
        raise ValueError(f"--adapters {folder} is not a folder: expected a folder of adapter files")
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})
    if min(limits.max_body_bytes, limits.max_texts, limits.max_tokens, limits.max_batch) < 1 or limits.timeout <= 0:
        raise ValueError("--max-body-bytes, --max-texts, --max-tokens and --max-batch must be at least 1, "
                         "--timeout positive")
    token = args.token or os.environ.get(TOKEN_ENV)
    from fedrp.train import select_device

    device = select_device(args.device)
    sock = listen(args.host, args.port, token, "fedrp serve", TOKEN_ENV)  # refused before the backbone loads
    from fedrp.backbone import load_backbone
    from fedrp.serving import TaskBank

    app = create_app(TaskBank(load_backbone(args.model or _named_backbone(folder)), device), folder, limits, token)
    log.warning("fedrp serve on http://%s:%d/ over %s, on %s", args.host, args.port, folder, device)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass


def _named_backbone(folder: Path) -> str | None:
    """The backbone the folder's first readable adapter was trained on (None: the default)."""
    from fedrp import artifact

    for path in sorted(folder.glob("*.safetensors")):
        try:
            return artifact.load(path, verify=False).backbone
        except (OSError, ValueError):
            continue
    return None
