"""Fault injection for simulations: named clients send corrupted replies on purpose, so that a run shows
what the server's checks refuse (`faulty-clients = "PARTITION:KIND,..."`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

State = dict[str, np.ndarray]
Fault = Callable[[State, State, str | None], tuple[State, str | None]]  # (state, sent, fingerprint) -> sent back


def _nan(state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    state[min(state)].reshape(-1)[0] = np.nan
    return state, fingerprint


def _scaled(state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    """The update (state minus what was sent) times 1000: a runaway or malicious client."""
    return {k: (sent[k] + 1000.0 * (v - sent[k])).astype(np.float32) for k, v in state.items()}, fingerprint


def _wrong_shape(state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    first = min(state)
    state[first] = state[first].reshape(-1)[:-1].copy()
    return state, fingerprint


def _wrong_fingerprint(state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    return state, "0" * 64


def _error(state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    raise RuntimeError("injected client failure")


FAULTS: dict[str, Fault] = {"nan": _nan, "wrong-fingerprint": _wrong_fingerprint, "scaled-1000": _scaled,
                            "wrong-shape": _wrong_shape, "error": _error}


def parse_faults(spec: str) -> dict[int, str]:
    """'0:nan,3:wrong-fingerprint' -> {0: 'nan', 3: 'wrong-fingerprint'}."""
    faults = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        pid, _, kind = item.partition(":")
        if not pid.strip().isdigit() or kind not in FAULTS:
            raise ValueError(f"faulty-clients entry {item!r} must be PARTITION:KIND with KIND one of {list(FAULTS)}")
        faults[int(pid)] = kind
    return faults


def corrupt(kind: str, state: State, sent: State, fingerprint: str | None) -> tuple[State, str | None]:
    """(state, fingerprint) as a client with this fault sends them; the trained state is left as it was."""
    return FAULTS[kind]({k: v.copy() for k, v in state.items()}, sent, fingerprint)
