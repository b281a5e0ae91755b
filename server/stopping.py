"""Stopping a run on request (Ctrl-C): a Grid whose waits end within a poll when asked to stop.

Under Flower's simulation engine the ServerApp runs in a thread of its own, and Ctrl-C reaches
only the main thread: the ServerApp would go on waiting for replies until the round timeout.
The process that runs it sets STOP instead, and the round loop ends at its next poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

STOP = threading.Event()
POLL_SECONDS = 0.1


class Interrupted(RuntimeError):
    """The run was asked to stop (Ctrl-C) before it finished."""


class StoppableGrid(Grid):
    """Delegates to a grid; send_and_receive polls for replies as Flower's grids do, and gives up on STOP."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    @property
    def run(self):
        return self.grid.run

    def set_run(self, run) -> None:
        self.grid.set_run(run)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        check()
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        check()
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        check()
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.time() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies += got
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if not waiting or (deadline is not None and time.time() >= deadline):
                break
            STOP.wait(POLL_SECONDS)
        return replies


def check() -> None:
    if STOP.is_set():
        raise Interrupted("stopped on request (Ctrl-C)")
