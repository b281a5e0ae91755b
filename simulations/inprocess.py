"""The same ServerApp and ClientApp in one process, without Ray: a Grid that calls the ClientApp directly.

Flower's simulation engine runs each virtual client in a Ray actor, which costs 25 to 50 s of
start-up per run and a worker per core. A grid of many short federations spends more on that
than on training, so its cells can run through this Grid instead: the ServerApp's main loop,
its strategy, validation, store and checkpoints, and the ClientApp's handlers are the very
same objects; only the transport differs. Flower has no in-process transport without a
LinkState and Ray workers behind it, hence this class.

Messages are deep-copied both ways, as Ray's pickling does, so neither side can alias the
other's arrays. Clients run one after another on this process's torch threads, and a run ends
on the same global vector as under the simulation engine, bit for bit (tests/test_inprocess.py;
the same with one torch thread or two).
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """Virtual nodes with partition ids 0..N-1 whose ClientApp runs in this process when a message arrives."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict | None = None) -> None:
        if num_nodes < 1:
            raise ValueError(f"num-supernodes must be at least 1, got {num_nodes}")
        self._client_app = client_app
        self._run = Run.create_empty(run_id=secrets.randbits(63))
        node_ids = [secrets.randbits(63) for _ in range(num_nodes)]  # opaque ids, as Flower's LinkState gives
        self._contexts = {
            node: Context(run_id=self._run.run_id, node_id=node, state=RecordDict(), run_config=dict(run_config or {}),
                          node_config={"partition-id": pid, "num-partitions": num_nodes})
            for pid, node in enumerate(node_ids)}
        self._pending: dict[str, Message] = {}
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, self._run.run_id, SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            if msg.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"no node {msg.metadata.dst_node_id} in this grid")
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the ClientApp on each pending message asked for, in the order pushed, and return the replies."""
        return [self._deliver(self._pending.pop(i)) for i in list(message_ids) if i in self._pending]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, msg: Message) -> Message:
        """The node's reply; an exception becomes an error reply, as Flower's simulation worker makes it."""
        context = self._contexts[msg.metadata.dst_node_id]
        try:
            reply = self._client_app(message=copy.deepcopy(msg), context=context)
        except Exception as err:  # noqa: BLE001 - a client's crash is the server's to record, not ours to raise
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                  reason=f"{type(err).__name__}: {err}"), reply_to=msg)
        reply = copy.deepcopy(reply)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        return reply


def run_in_process(server_app: ServerApp, client_app: ClientApp, num_nodes: int,
                   run_config: dict | None = None) -> None:
    """Run a ServerApp against num_nodes in-process clients, as `run_simulation` would with Ray."""
    grid = InProcessGrid(client_app, num_nodes, run_config)
    context = Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                      run_config=dict(run_config or {}))
    server_app(grid, context)
