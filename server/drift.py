"""The server's half of SCAFFOLD and FedDyn: the per-client state their rules keep, held here.

Both rules give each client a vector that its next round adds to its gradients (fedrp.drift). The
papers keep it on the client; here the server keeps it and sends it with the round, since it comes
from the client's replies, which the server sees anyway, and a deployed client is a fresh process
per message. For z and the head it is a few KB per client.
"""

from __future__ import annotations

import numpy as np

Arrays = dict[str, np.ndarray]


def _zeros(template: Arrays) -> Arrays:
    return {k: np.zeros(v.shape, dtype=np.float64) for k, v in template.items()}


def _float32(state: Arrays) -> Arrays:
    return {k: v.astype(np.float32) for k, v in state.items()}


class PerClientState:
    """A vector shared by the federation (`shared`) and one per client, by sampling key; checkpointed."""

    shared_name = "shared"

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients
        self.shared: Arrays | None = None
        self.clients: dict[int, Arrays] = {}

    def own(self, key: int, template: Arrays) -> Arrays:
        """This client's vector (zeros before it has trained)."""
        return self.clients.get(key) or _zeros(template)

    def state(self) -> Arrays:
        out = {f"{self.shared_name}/{k}": v for k, v in (self.shared or {}).items()}
        for key, arrays in self.clients.items():
            out.update({f"client-{key}/{k}": v for k, v in arrays.items()})
        return out

    def load(self, state: Arrays) -> None:
        prefix = f"{self.shared_name}/"
        self.shared = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)} or None
        self.clients = {}
        for name, value in state.items():
            if name.startswith("client-"):
                head, array = name.split("/", 1)
                self.clients.setdefault(int(head.removeprefix("client-")), {})[array] = value


class ControlVariates(PerClientState):
    """SCAFFOLD (Karimireddy et al. 2020, option II): the server's control variate c (`shared`) and each
    client's c_i. A client corrects its gradients by c - c_i and returns the mean of its data gradients over
    the round, its new c_i; then c moves by the sum of the changes of the c_i over all N clients."""

    shared_name = "c"

    def correction(self, key: int, template: Arrays) -> Arrays:
        """c - c_i for the client of this key."""
        c, own = self.shared or _zeros(template), self.own(key, template)
        return _float32({k: c[k] - own[k] for k in template})

    def update(self, replies: list[tuple[int, Arrays]]) -> None:
        """Take each accepted client's mean gradient as its new c_i; c += (1/N) sum of the c_i's changes."""
        if not replies:
            return
        template = replies[0][1]
        c = self.shared or _zeros(template)
        for key, gradient in replies:
            old, new = self.own(key, template), {k: gradient[k].astype(np.float64) for k in template}
            c = {k: c[k] + (new[k] - old[k]) / self.num_clients for k in template}
            self.clients[key] = new
        self.shared = c


class DynamicRegularizer(PerClientState):
    """FedDyn (Acar et al. 2021): each client's gradient state g_i and the server's h (`shared`).

    A client minimises L_i(w) - <g_i, w> + alpha/2 ||w - w_global||^2; at its optimum w_i the gradient of
    L_i is g_i - alpha (w_i - w_global), which becomes its new g_i. The server's h collects alpha times the
    mean drift over all N clients, and the new global weights are the round's mean minus h / alpha."""

    shared_name = "h"

    def __init__(self, alpha: float, num_clients: int) -> None:
        super().__init__(num_clients)
        self.alpha = alpha

    def linear(self, key: int, template: Arrays) -> Arrays:
        """-g_i for the client of this key."""
        return _float32({k: -v for k, v in self.own(key, template).items()})

    def update(self, sent: Arrays, replies: list[tuple[int, Arrays]]) -> Arrays:
        """The new global weights from the round's accepted weights, updating every g_i and h on the way."""
        h = self.shared or _zeros(sent)
        for key, weights in replies:
            drift = {k: weights[k].astype(np.float64) - sent[k] for k in sent}
            own = self.own(key, sent)
            self.clients[key] = {k: own[k] - self.alpha * drift[k] for k in sent}
            h = {k: h[k] - self.alpha * drift[k] / self.num_clients for k in sent}
        self.shared = h
        mean = {k: np.mean([w[k].astype(np.float64) for _, w in replies], axis=0) for k in sent}
        return _float32({k: mean[k] - h[k] / self.alpha for k in sent})
