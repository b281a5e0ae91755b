"""A warm ClientApp process for one SuperNode: `python -m clients.worker --socket PATH`.

Flower's deployment engine runs every message in a fresh `flwr-clientapp` process, which would
import torch, transformers, peft, datasets and opacus and build the model again each time (5 to
7 s on 2 cores before any training). This process imports the real ClientApp once, so all of that
stays loaded, and with it the models, projections and partitions fedrp.federation caches per
process. The thin app of each message (clients.warm) sends it the message and the node's context
over a Unix socket that only this user may open; it runs the real app, mods included, and sends
back the reply and the context as the app left it (the node state stays the SuperNode's: nothing
of a run is kept here but caches). One request at a time; others wait in the socket's backlog.
It serves the code it was started with: restart it after updating the app.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from google.protobuf.message import DecodeError

from clients.client_app import app
from clients.warm import ERROR, REPLY, decode, encode, recv_frame, send_frames

log = logging.getLogger("fedrp.worker")
REQUEST_SECONDS = 60.0  # for reading a request and writing its reply; the app itself may take as long as it takes


class Stop(BaseException):
    """SIGTERM or SIGINT: leave the serving loop (a BaseException, so no `except Exception` swallows it)."""


def _stop(signum: int, _frame) -> None:
    raise Stop(signal.Signals(signum).name)


def listen(path: Path) -> socket.socket:
    """A Unix socket at `path` that only this user may connect to (0600). A socket file left by a
    killed worker is replaced; one that a worker still answers on is refused."""
    if path.is_socket():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()
            else:
                raise SystemExit(f"a worker already serves {path}")
    elif path.exists():
        raise SystemExit(f"{path} exists and is not a socket")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # bind creates the file: 0600 from the start, never readable by others in between
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    server.listen(16)
    return server


def handle(conn: socket.socket) -> None:
    """One request: run the app on it and send back its reply and context, or its exception in one line."""
    conn.settimeout(REQUEST_SECONDS)
    message, context = decode(recv_frame(conn), recv_frame(conn))
    kind, start = message.metadata.message_type, time.perf_counter()
    try:
        reply = app(message, context)
    except Exception as err:  # the app's failure is the request's answer, not the worker's end
        log.exception("the ClientApp raised on a %s message of run %d", kind, context.run_id)
        send_frames(conn, ERROR, f"{type(err).__name__}: {err}".encode())
        return
    send_frames(conn, REPLY, *encode(reply, context))
    log.info("%s message of run %d answered in %.2f s", kind, context.run_id, time.perf_counter() - start)


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                handle(conn)
            except (OSError, DecodeError) as err:  # a client that vanished or sent garbage
                log.warning("dropped a request: %s: %s", type(err).__name__, err)
            except Exception:  # nor may anything else about one request stop the node's worker
                log.exception("dropped a request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.worker",
                                     description="Serve the fedrp ClientApp warm on a Unix socket (see clients.warm).")
    parser.add_argument("--socket", type=Path, required=True,
                        help="the socket to create; the SuperNode's node config names it as worker-socket")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s:%(levelname)s:%(message)s")  # unless imports made one
    logging.getLogger("fedrp").setLevel(logging.INFO)  # as the ServerApp does
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    path = args.socket.absolute()
    server = listen(path)
    ours = os.stat(path).st_ino
    log.info("serving %s (pid %d)", path, os.getpid())
    try:
        serve(server)
    except Stop as stop:
        log.info("stopping on %s", stop)
    finally:
        server.close()
        try:
            if os.stat(path).st_ino == ours:  # not a socket another worker has bound since
                path.unlink()
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
