"""The ClientApp Flower loads: hands each message to a warm worker beside the SuperNode, if it has one.

Flower's deployment engine runs every message in a fresh `flwr-clientapp` process, and the real
ClientApp (clients.client_app) spends 5 to 7 s of it importing torch, transformers and peft and
building the model before any training. This app imports only flwr and the standard library.
With `worker-socket` in the node config it sends the message and the node's context to that
worker (clients.worker, which keeps all of that loaded), returns its reply and takes back the
context as the real app left it; without it, it runs the real app in this process as before.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.serde import context_from_proto, context_to_proto, message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

SOCKET_KEY = "worker-socket"  # node config: the Unix socket of this node's worker
REPLY, ERROR = b"reply", b"error"  # the worker's first frame: a reply and a context follow, or one line of error
_LENGTH = struct.Struct("!Q")  # every payload goes after its length: 8 bytes, big-endian
MAX_FRAME = 2**31  # protobuf's own limit for one message; a larger length is garbage, not a payload


def send_frames(sock: socket.socket, *payloads: bytes) -> None:
    for payload in payloads:
        sock.sendall(_LENGTH.pack(len(payload)))
        sock.sendall(payload)


def recv_frame(sock: socket.socket) -> bytes:
    """One payload; ConnectionError if the other side closes first or sends a length no payload has."""
    (size,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes announced; the limit is {MAX_FRAME}")
    return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionError(f"the connection closed after {got} of {size} bytes")
        got += n
    return bytes(buf)


def encode(message: Message, context: Context) -> tuple[bytes, bytes]:
    return message_to_proto(message).SerializeToString(), context_to_proto(context).SerializeToString()


def decode(message: bytes, context: bytes) -> tuple[Message, Context]:
    proto_message, proto_context = ProtoMessage(), ProtoContext()
    proto_message.ParseFromString(message)
    proto_context.ParseFromString(context)
    return message_from_proto(proto_message), context_from_proto(proto_context)


def forward(path: str, message: Message, context: Context) -> tuple[Message, Context]:
    """The worker's reply and the context as the real app left it; RuntimeError with the worker's one
    line when the app raised, or when no worker answers at `path`."""
    request = encode(message, context)  # before connecting: the worker waits only so long for a request
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as err:
            raise RuntimeError(f"no warm worker answers at {path} ({err.strerror or err}): start "
                               f"`python -m clients.worker --socket {path}` beside the SuperNode, or drop "
                               f"{SOCKET_KEY} from its node config") from None
        try:
            send_frames(sock, *request)
            kind = recv_frame(sock)
            if kind == ERROR:
                raise RuntimeError(recv_frame(sock).decode(errors="replace"))
            if kind != REPLY:
                raise RuntimeError(f"the warm worker at {path} answered {kind[:40]!r}")
            return decode(recv_frame(sock), recv_frame(sock))
        except OSError as err:  # ConnectionError among them: the worker stopped mid-request
            raise RuntimeError(f"the warm worker at {path} dropped the request ({err}); see its log") from None


class WarmClientApp(ClientApp):
    """A ClientApp that runs the real one in the node's warm worker, or here when the node has none."""

    def __call__(self, message: Message, context: Context) -> Message:
        path = context.node_config.get(SOCKET_KEY)
        if not path:
            from clients.client_app import app as real  # imported only now: torch & co. cost seconds

            return real(message, context)
        reply, changed = forward(str(path), message, context)
        # Flower keeps and sends back the Context object it passed in, so the node state (DP budget,
        # SecAgg+'s stages) must land in that very object.
        for field in dataclasses.fields(Context):
            setattr(context, field.name, getattr(changed, field.name))
        return reply


app = WarmClientApp()
