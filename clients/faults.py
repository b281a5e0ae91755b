"""Fault injection for simulations: named clients send corrupted replies on purpose."""

from __future__ import annotations

import numpy as np


def corrupt(kind: str, state: dict[str, np.ndarray], sent: dict[str, np.ndarray], fingerprint: str | None):
    """(state, fingerprint) as a faulty client would send them."""
    state = {k: v.copy() for k, v in state.items()}
    first = min(state)
    if kind == "nan":
        state[first].reshape(-1)[0] = np.nan
    elif kind == "scaled-1000":
        state = {k: sent[k] + 1000.0 * (v - sent[k]) for k, v in state.items()}
        state = {k: v.astype(np.float32) for k, v in state.items()}
    elif kind == "wrong-shape":
        state[first] = state[first].reshape(-1)[:-1].copy()
    elif kind == "wrong-fingerprint":
        fingerprint = "0" * 64
    elif kind == "error":
        raise RuntimeError("injected client failure")
    return state, fingerprint
