"""What a client may refuse a round for. Anything else a client raises is a bug, and fails loudly.

A refusal travels back as an error reply with code REFUSED and the refusal's message, and the
server stores it as `client-refused`; any other exception reaches Flower, whose error reply the
server stores as `client-error`. Each refusal is also a ValueError, so the command line and the
simulation entry point report it as bad input in one line.
"""

from __future__ import annotations

REFUSED = 1  # the error code of a refusal reply (Flower's own codes for a crashed ClientApp differ)


class Refusal(ValueError):
    """A round this device declines."""


class IdentityMismatch(Refusal):
    """This device's backbone or projection differs from the run's."""


class LocalDataError(Refusal):
    """This node's data is missing or malformed."""


class StateMismatch(Refusal):
    """The state or settings a round sends do not fit this device's model."""
