"""Flower strategies that validate every reply before aggregating, and sample clients by seed.

Each aggregation rule is Flower's own (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedMedian,
FedTrimmedAvg), or Flower's FedAvg with a rule's server state (SCAFFOLD, FedDyn: server.drift); the
mixin in front of it refuses bad replies (recorded with their reason) and picks the round's
clients from the run seed and the round number, by partition id, so that a resumed run
trains exactly the clients the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, FedYogi
from flwr.serverapp.strategy.fedopt import FedOpt

from fedrp import payload
from fedrp.federation import FedConfig
from fedrp.federation.config import sample_partitions
from fedrp.privacy.client_level import ClientLevelDP, noisy_mean
from fedrp.refusals import REFUSED
from server.drift import ControlVariates, DynamicRegularizer, PerClientState


def to_record(state: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in state.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


class Validating:
    """Mixin: deterministic sampling, reply validation and a record of every reply."""

    settings: ClassVar[dict[str, str]] = {}  # the Flower rule's arguments, by the run-config field they come from
    # ArrayRecords a reply carries beside its weights: validated like them, counted in its bytes, and taken out
    # (into `self.accepted`) before Flower's rule aggregates, which expects one ArrayRecord per reply.
    extra_records: ClassVar[tuple[str, ...]] = ()
    # Each accepted reply's share of the aggregate, for the run store: by its examples (FedAvg and the rules on it),
    # equal (FedDyn's plain mean), or none (the robust rules take coordinates, not replies).
    weighting: ClassVar[str] = "examples"

    def prepare(self, nodes: dict[int, int | None], seed: int, fingerprint: str | None, norm_bound: float,
                client_dp: ClientLevelDP | None = None, norm_ratio: float = 0.0) -> None:
        self.nodes = nodes  # node id -> partition id (None: a node with its own data file)
        self.seed = seed
        self.fingerprint = fingerprint
        self.norm_bound = norm_bound or None
        self.norm_ratio = norm_ratio
        self.client_dp = client_dp
        self.records: list[dict] = []
        self.sent: dict[str, np.ndarray] = {}
        self.num_sampled = 0
        self.accepted: list[tuple[int, dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]] = []
        self.states: dict[int, dict[str, np.ndarray]] = {}  # node id -> a reply's arrays, where they fit the model

    def _messages(self, rnd: int, arrays: ArrayRecord, config: ConfigRecord, fraction: float, minimum: int,
                  kind: str, stream: int) -> list[Message]:
        by_key = {self.sampling_key(n): n for n in self.nodes}
        chosen = sample_partitions(list(by_key), fraction, minimum, self.seed, rnd, stream)
        config["server-round"] = rnd
        return [Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=by_key[k], message_type=kind)
                for k in chosen]

    def sampling_key(self, node: int) -> int:
        """The partition id, so simulations sample alike across restarts; else the node id itself."""
        pid = self.nodes.get(node)
        return node if pid is None else pid

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.sent = from_record(arrays)
        if isinstance(self, FedOpt):
            self.current_arrays = {k: v.copy() for k, v in self.sent.items()}
        messages = self._messages(server_round, arrays, config, self.fraction_train, self.min_train_nodes,
                                  MessageType.TRAIN, 0)
        self.num_sampled = len(messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        return self._messages(server_round, arrays, config, self.fraction_evaluate, 1, MessageType.EVALUATE, 1)

    def _judge(self, msg: Message) -> tuple[dict, bool]:
        node = msg.metadata.src_node_id
        record = {"node_id": node, "partition_id": self.nodes.get(node), "bytes": 0}
        if msg.has_error():
            reason = payload.CLIENT_REFUSED if msg.error.code == REFUSED else payload.CLIENT_ERROR
            return {**record, "status": "refused", "reason": reason,
                    "detail": payload.error_line(msg.error.reason)}, False  # a crash's traceback is in Flower's log
        content = msg.content
        state = from_record(content["arrays"]) if "arrays" in content.array_records else {}
        metrics = dict(content["metrics"]) if "metrics" in content.metric_records else {}
        meta = dict(content["meta"]) if "meta" in content.config_records else {}
        extras = {name: from_record(content[name]) if name in content.array_records else {}
                  for name in self.extra_records}
        record.update(bytes=payload.nbytes(state) + sum(payload.nbytes(e) for e in extras.values()),
                      num_examples=metrics.get("num-examples"), metrics=metrics)
        if payload.array_refusal(state, self.sent) is None:
            self.states[node] = state
        verdict = payload.refusal(state, self.sent, meta.get("fingerprint"), self.fingerprint,
                                  metrics.get("num-examples"), self.norm_bound)
        for name, extra in extras.items():
            verdict = verdict or payload.array_refusal(extra, self.sent, name)
        if verdict is not None:
            return {**record, "status": "refused", "reason": verdict[0], "detail": verdict[1]}, False
        return {**record, "status": "accepted"}, True

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Refuse what fails validation; aggregate the rest in partition order (bit-stable sums)."""
        replies = sorted(replies, key=lambda m: self.sampling_key(m.metadata.src_node_id))
        accepted, self.records, self.states = [], [], {}
        for msg in replies:
            record, ok = self._judge(msg)
            self.records.append(record)
            if ok:
                accepted.append((msg, record))
        norms = [payload.update_norm(from_record(m.content["arrays"]), self.sent) for m, _ in accepted]
        for i, detail in payload.norm_outliers(norms, self.norm_ratio).items():
            accepted[i][1].update(status="refused", reason=payload.OUTLIER, detail=detail)
        accepted = [m for m, record in accepted if record["status"] == "accepted"]
        self.accepted = [(self.sampling_key(m.metadata.src_node_id), from_record(m.content["arrays"]),
                          {name: from_record(m.content[name]) for name in self.extra_records}) for m in accepted]
        for m in accepted:
            for name in self.extra_records:
                del m.content[name]
        if len(accepted) < self.min_train_nodes:
            return None, None
        arrays, metrics = super().aggregate_train(server_round, accepted)
        if self.client_dp is not None:  # replace the weighted mean by DP-FedAvg's clipped, noised one
            states = [from_record(m.content["arrays"]) for m in accepted]
            # Fresh OS entropy, never the run seed: noise a participant could predict protects nothing.
            arrays = to_record(noisy_mean(self.sent, states, self.client_dp, self.num_sampled, np.random.default_rng()))
        return arrays, metrics

    def describe_updates(self, aggregate: dict[str, np.ndarray] | None) -> None:
        """Add to each reply's record its update's norms and cosine with the round's final aggregate update
        (payload.update_stats), and an accepted reply's weight in it (`weighting`)."""
        accepted = [r for r in self.records if r["status"] == "accepted"]
        total = sum(float(r.get("num_examples") or 0) for r in accepted)
        for record in self.records:
            state = self.states.get(record["node_id"])
            if state is not None:
                record.update(payload.update_stats(state, self.sent, aggregate))
            if record["status"] != "accepted" or self.weighting == "none" or self.client_dp is not None:
                continue
            record["weight"] = (1 / len(accepted) if self.weighting == "uniform"
                                else float(record.get("num_examples") or 0) / total if total else None)

    def server_state(self) -> dict[str, np.ndarray]:
        """The server optimizer's state, for checkpoints (FedAdam's moments; nothing for the others)."""
        out = {}
        for name in ("m_t", "v_t"):
            for k, v in (getattr(self, name, None) or {}).items():
                out[f"{name}/{k}"] = np.asarray(v)
        return out

    def load_server_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("m_t", "v_t"):
            part = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}/")}
            if part:
                setattr(self, name, part)


class FedAvgRP(Validating, FedAvg):
    """FedAvg weighted by examples: exact for SLaSh, whose shifts are linear in z."""


class FedAvgMRP(Validating, FedAvgM):
    """FedAvgM (Hsu et al., 2019): the server steps along a momentum of the rounds' averaged updates, so the
    swing that each round's sample of label-skewed clients gives the global vector averages out over rounds.
    Its rate is server_step * (1 - momentum): at step 1 a steady update moves the model as far as FedAvg's would;
    with momentum 0 and a step above 1 it is FedAvg with a server rate that moves past the clients' average."""

    settings: ClassVar[dict[str, str]] = {"server_momentum": "server_momentum", "server_step": "server_step"}

    def __init__(self, *, server_momentum: float, server_step: float = 1.0, **kwargs) -> None:
        super().__init__(server_momentum=server_momentum, server_learning_rate=server_step * (1.0 - server_momentum),
                         **kwargs)
        self.saved_momentum: dict[str, np.ndarray] | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        # Flower's FedAvgM takes its base vector from the first round only; the mixin builds the messages
        # itself, so the vector that this round sends is set here, and a resumed momentum is put in its order.
        self.current_arrays = arrays
        if self.saved_momentum is not None:
            self.momentum_vector = [self.saved_momentum[k] for k in arrays]
            self.saved_momentum = None
        return super().configure_train(server_round, arrays, config, grid)

    def server_state(self) -> dict[str, np.ndarray]:
        """The momentum, by array name (Flower keeps it as a list in the arrays' order)."""
        if self.momentum_vector is None:
            return {}
        return {f"momentum/{k}": np.asarray(v) for k, v in zip(self.current_arrays.keys(), self.momentum_vector,
                                                                 strict=True)}

    def load_server_state(self, state: dict[str, np.ndarray]) -> None:
        saved = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("momentum/")}
        self.saved_momentum = saved or None


class FedAdamRP(Validating, FedAdam):
    """FedAdam: the averaged update drives a server-side Adam step."""

    settings: ClassVar[dict[str, str]] = {"eta": "server_lr"}


class FedYogiRP(Validating, FedYogi):
    """FedYogi (Reddi et al. 2021): FedAdam with Yogi's additive second moment, which grows more slowly."""

    settings: ClassVar[dict[str, str]] = {"eta": "server_lr"}


class FedProxRP(Validating, FedProx):
    """FedProx (Li et al. 2020): clients add mu/2 ||w - w_global||^2 to their loss (fedrp.drift); the server
    averages as FedAvg does. The round's message carries mu as Flower's FedProx sends it, "proximal-mu"."""

    settings: ClassVar[dict[str, str]] = {"proximal_mu": "proximal_mu"}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)


class PerClientTerm(Validating, FedAvg):
    """A rule whose server keeps a vector per client and sends it in that client's train message, as the
    ArrayRecord "drift" that the client adds to its gradients (SCAFFOLD, FedDyn; server.drift). The vectors
    (`held`) outlive the rounds: `prepare` recounts the clients, and checkpoints keep them under `name`/."""

    name: ClassVar[str]
    held: PerClientState

    def own_term(self, key: int, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _messages(self, rnd: int, arrays: ArrayRecord, config: ConfigRecord, fraction: float, minimum: int,
                  kind: str, stream: int) -> list[Message]:
        messages = super()._messages(rnd, arrays, config, fraction, minimum, kind, stream)
        if kind == MessageType.TRAIN:
            for msg in messages:
                key = self.sampling_key(msg.metadata.dst_node_id)
                msg.content["drift"] = to_record(self.own_term(key, self.sent))
        return messages

    def prepare(self, *args, **kwargs) -> None:
        super().prepare(*args, **kwargs)
        self.held.num_clients = max(1, len(self.nodes))

    def server_state(self) -> dict[str, np.ndarray]:
        return {f"{self.name}/{k}": v for k, v in self.held.state().items()}

    def load_server_state(self, state: dict[str, np.ndarray]) -> None:
        prefix = f"{self.name}/"
        self.held.load({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})


class ScaffoldRP(PerClientTerm):
    """SCAFFOLD (Karimireddy et al. 2020): each client corrects its gradients by c - c_i and replies with its
    mean gradient (the ArrayRecord "gradient"), its new c_i; the model is averaged as FedAvg does."""

    name = "scaffold"
    extra_records = ("gradient",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.held = ControlVariates(num_clients=1)

    def own_term(self, key: int, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.held.correction(key, template)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        config["record-gradient"] = True
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            self.held.update([(key, extras["gradient"]) for key, _, extras in self.accepted])
        return arrays, metrics


class FedDynRP(PerClientTerm):
    """FedDyn (Acar et al. 2021): each client adds -g_i and alpha (w - w_global) to its gradients; the server
    sets the round's plain mean minus h / alpha (server.drift.DynamicRegularizer)."""

    name = "feddyn"
    settings: ClassVar[dict[str, str]] = {"alpha": "feddyn_alpha"}
    weighting = "uniform"

    def __init__(self, *, alpha: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.alpha = alpha
        self.held = DynamicRegularizer(alpha, num_clients=1)

    def own_term(self, key: int, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.held.linear(key, template)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        config["proximal-mu"] = self.alpha
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = to_record(self.held.update(self.sent, [(key, state) for key, state, _ in self.accepted]))
        return arrays, metrics


class FedMedianRP(Validating, FedMedian):
    """Coordinate-wise median: robust to a minority of corrupted replies."""

    weighting = "none"


class FedTrimmedAvgRP(Validating, FedTrimmedAvg):
    """Coordinate-wise trimmed mean."""

    weighting = "none"

    settings: ClassVar[dict[str, str]] = {"beta": "trim_beta"}


# The run config's `aggregation` values. A rule is a class here and one line in this registry.
STRATEGIES: dict[str, type[Validating]] = {
    "fedavg": FedAvgRP, "fedavgm": FedAvgMRP, "fedprox": FedProxRP, "scaffold": ScaffoldRP, "feddyn": FedDynRP,
    "fedadam": FedAdamRP, "fedyogi": FedYogiRP, "median": FedMedianRP, "trimmed-mean": FedTrimmedAvgRP,
}


def check_aggregation(cfg: FedConfig) -> type[Validating]:
    """The run's rule, or one line naming the ones there are."""
    if cfg.aggregation not in STRATEGIES:
        raise ValueError(f"aggregation must be one of {list(STRATEGIES)}, got {cfg.aggregation!r}")
    return STRATEGIES[cfg.aggregation]


def make_strategy(cfg: FedConfig) -> Validating:
    """The run's aggregation rule, with the run config's sampling fractions and the rule's own settings."""
    rule = check_aggregation(cfg)
    return rule(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                min_train_nodes=cfg.min_train_nodes, min_evaluate_nodes=1, min_available_nodes=1,
                **{arg: getattr(cfg, key) for arg, key in rule.settings.items()})
