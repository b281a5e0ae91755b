"""The federated run config: one key per field, grouped by concern, checked before any work starts;
and the round schedule (rate and seed) that follows from it."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from functools import cached_property

import numpy as np

from fedrp import glue
from fedrp.faults import parse_faults
from fedrp.methods import federated_local
from fedrp.privacy.client_level import ClientLevelDP
from fedrp.privacy.config import PrivacyConfig
from fedrp.secagg import SecAggConfig
from fedrp.spec import ModelOptions, ModelSpec
from fedrp.train import OPTIMIZERS

LOCAL_LOSSES = ("logit-adjusted", "ce")
LR_DECAYS = ("none", "cosine")
SECURE_AGGREGATIONS = ("none", "secagg+")
DP_SCHEDULES = ("sampled", "all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FedConfig(ModelOptions):
    """The run config ([tool.flwr.app.config] in pyproject.toml; Python names use _ for -): the model's
    options (fedrp.spec.ModelOptions), then the keys below, grouped by concern."""

    task: str = "sst2"
    # data: where the examples come from and how they are split over clients
    data_dir: str = ""
    data_seed: int = 0  # partitions, subsets, local shuffles and client sampling (not the projections: seed)
    partition_scheme: str = "dirichlet"
    alpha: float = 0.5
    min_partition_size: int = 10
    max_train_samples: int = 0  # 0: the whole training set, before partitioning
    max_train_samples_per_client: int = 200  # 0: the whole partition
    max_eval_samples: int = 0  # 0: the whole dev set (server-side evaluation)
    validation_samples: int = 0  # > 0: hold out this many training examples and evaluate the server on them, not dev
    max_length: int = 128
    # local training: what each sampled client does in a round
    local_epochs: float = 1.0
    lr: float = 0.0  # 0: the method's federated default for its local optimizer (fedrp.methods.federated_local)
    local_optimizer: str = ""  # "": the method's (fedrp.methods.FEDERATED_OPTIMIZER, AdamW); "adamw" or "sgd" (momentum 0.9)
    local_loss: str = "logit-adjusted"  # or "ce"; see logit_offsets
    lr_decay: str = "cosine"  # the clients' rate falls over the rounds (round_lr), or "none"
    schedule: str = "constant"  # local learning-rate schedule; rounds are short, so no decay by default
    batch_size: int = 8  # local batches: more steps a round for the same compute (fedrp.methods.FEDERATED_LR)
    bf16: str = "auto"
    faulty_clients: str = ""
    # server: rounds, sampling, aggregation and the checks on replies
    num_server_rounds: int = 20
    fraction_train: float = 0.5
    fraction_evaluate: float = 0.5
    min_train_nodes: int = 2
    eval_every: int = 1  # the server evaluates after every eval-every rounds, and always after the last
    aggregation: str = "fedavg"  # server.strategy.STRATEGIES (the server checks it: fedrp never imports server/)
    server_lr: float = 0.01  # fedadam's eta
    trim_beta: float = 0.2
    norm_bound: float = 0.0  # 0: off
    norm_ratio: float = 100.0  # refuse an update over this many times the round's median norm (3+ replies); 0: off
    round_timeout: float = 600.0
    store: str = "runs/fedrp.sqlite"
    checkpoint_dir: str = "runs/checkpoints"
    resume_from: str = ""
    dashboard_port: int = 0  # > 0: the ServerApp serves the dashboard over `store` beside the run
    dashboard_host: str = "127.0.0.1"  # anything but loopback needs $FEDRP_DASHBOARD_TOKEN
    # differential privacy: sample-level on each client, client-level on the server
    dp_epsilon: float = 0.0  # sample-level DP budget of each client over the whole run; 0: off
    dp_delta: float = 0.0  # 0: 1/(2n) for a client's n examples
    dp_max_grad_norm: float = 1.0
    dp_accountant: str = "rdp"
    dp_count_noise: float = 10.0  # noise of the one-off Gaussian release of a client's label counts, which set its
    #                               logit offsets and per-class clipping norms under DP; 0: neither (plain loss, one norm)
    dp_schedule: str = "sampled"  # noise for the rounds the public sampling schedule gives a client, or "all" rounds
    dp_z_share: float = 0.0  # with dp-count-noise: z's share of the clipping norm squared, the head's the rest; 0: one norm
    client_dp_noise: float = 0.0  # client-level DP on the server (DP-FedAvg): noise multiplier; 0: off
    client_dp_clip: float = 1.0  # L2 bound of each client's whole update
    client_dp_delta: float = 1e-5
    # secure aggregation
    secure_aggregation: str = "none"  # or "secagg+": the server learns only the weighted mean update
    secagg_clip: float = 8.0  # SecAgg+ clipping range of every update coordinate (times max-weight / weight)
    secagg_quantization: int = 4194304  # SecAgg+ quantisation levels over [-clip, clip] (2^22)
    secagg_max_weight: float = 0.0  # cap on a client's weight; 0: max-train-samples-per-client, else 1000

    def __post_init__(self) -> None:
        super().__post_init__()  # the model's options
        if self.local_loss not in LOCAL_LOSSES:
            raise ValueError(f"local-loss must be one of {LOCAL_LOSSES}, got {self.local_loss!r}")
        if self.local_optimizer not in ("", *OPTIMIZERS):
            raise ValueError(f"local-optimizer must be empty (the method's) or one of {OPTIMIZERS}, "
                             f"got {self.local_optimizer!r}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be positive, or 0 for the method's federated default; got {self.lr}")
        if not self.lr and federated_local(self.method, self.local_optimizer)[1] is None:
            raise ValueError(f"{self.method} has no measured federated rate for local-optimizer "
                             f"{self.local_optimizer!r}: set lr")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr-decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        glue.get_task(self.task)
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError(f"fraction-train must be in (0, 1], got {self.fraction_train}")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise ValueError(f"fraction-evaluate must be in [0, 1], got {self.fraction_evaluate}")
        if self.num_server_rounds < 1 or self.min_train_nodes < 1 or self.round_timeout <= 0:
            raise ValueError("num-server-rounds and min-train-nodes must be at least 1 and round-timeout positive")
        for key, value, low in (("batch-size", self.batch_size, 1), ("min-partition-size",
                                self.min_partition_size, 1), ("max-length", self.max_length, 8),
                                ("max-train-samples", self.max_train_samples, 0),
                                ("max-train-samples-per-client", self.max_train_samples_per_client, 0),
                                ("max-eval-samples", self.max_eval_samples, 0)):
            if value < low:
                raise ValueError(f"{key} must be at least {low}, got {value}")
        for key, value in (("local-epochs", self.local_epochs), ("server-lr", self.server_lr)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a positive number, got {value}")
        if not (math.isfinite(self.norm_bound) and self.norm_bound >= 0):
            raise ValueError(f"norm-bound must be 0 (off) or positive, got {self.norm_bound}")
        if not (math.isfinite(self.norm_ratio) and (self.norm_ratio == 0 or self.norm_ratio > 1)):
            raise ValueError(f"norm-ratio must be 0 (off) or above 1, got {self.norm_ratio}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive number (Dirichlet concentration), got {self.alpha}")
        if self.validation_samples < 0 or self.eval_every < 1:
            raise ValueError(f"validation-samples must be 0 or more and eval-every at least 1, got "
                             f"{self.validation_samples} and {self.eval_every}")
        parse_faults(self.faulty_clients)  # a typo fails before any work
        if self.client_dp is not None and self.aggregation != "fedavg":  # client_dp checks the client-dp-* values
            raise ValueError(f"client-level DP (client-dp-noise) averages clipped updates: it needs aggregation "
                             f"fedavg, got {self.aggregation!r}")
        if self.dp_epsilon < 0:
            raise ValueError(f"dp-epsilon must be 0 (no DP) or a positive budget, got {self.dp_epsilon}")
        if not (math.isfinite(self.dp_count_noise) and self.dp_count_noise >= 0):
            raise ValueError(f"dp-count-noise must be 0 (off) or positive, got {self.dp_count_noise}")
        if not 0.0 <= self.dp_z_share < 1.0:
            raise ValueError(f"dp-z-share must be in [0, 1), got {self.dp_z_share}")
        if self.dp_schedule not in DP_SCHEDULES:
            raise ValueError(f"dp-schedule must be one of {DP_SCHEDULES}, got {self.dp_schedule!r}")
        _ = self.secagg, self.privacy  # bad secagg-* and dp-* values fail here, not in round 1

    def _secure_aggregation(self) -> SecAggConfig | None:
        if self.secure_aggregation not in SECURE_AGGREGATIONS:
            raise ValueError(f"secure-aggregation must be one of {SECURE_AGGREGATIONS}, "
                             f"got {self.secure_aggregation!r}")
        if self.secure_aggregation == "none":
            return None
        if self.aggregation != "fedavg" or self.norm_bound:
            raise ValueError(f"secure-aggregation {self.secure_aggregation!r} shows the server only the weighted mean: "
                             f"it needs aggregation fedavg and norm-bound 0 (secagg-clip bounds each coordinate "
                             f"instead); got {self.aggregation!r} and {self.norm_bound}")
        if self.min_train_nodes < 2:
            raise ValueError(f"secure aggregation needs min-train-nodes of at least 2, got {self.min_train_nodes}")
        max_weight = self.secagg_max_weight or self.max_train_samples_per_client or 1000
        return SecAggConfig(self.secagg_clip, self.secagg_quantization, float(max_weight))

    @classmethod
    def from_run_config(cls, run_config: dict, overrides: dict | None = None) -> FedConfig:
        """Defaults, then the run config, then overrides; unknown keys are refused by name."""
        merged = {**dict(run_config), **(overrides or {})}
        names = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in merged.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ValueError(f"unknown run-config key {key!r}; expected one of {sorted(n.replace('_', '-') for n in names)}")
            values[name] = _coerce(cls, name, value)
        return cls(**values)

    def to_run_config(self) -> dict:
        return {k.replace("_", "-"): v for k, v in dataclasses.asdict(self).items()}

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr > 0 else federated_local(self.method, self.local_optimizer)[1]

    @property
    def optimizer(self) -> str:
        """The clients' local optimizer: the one set, else the method's."""
        return federated_local(self.method, self.local_optimizer)[0]

    @cached_property
    def client_dp(self) -> ClientLevelDP | None:
        """Client-level DP applied by the server, or None."""
        if self.client_dp_noise == 0:
            return None
        return ClientLevelDP(self.client_dp_noise, self.client_dp_clip, self.client_dp_delta)

    @cached_property
    def secagg(self) -> SecAggConfig | None:
        """SecAgg+'s ranges when secure aggregation is on, else None."""
        return self._secure_aggregation()

    @cached_property
    def privacy(self) -> PrivacyConfig | None:
        """Sample-level DP-SGD of every client, or None."""
        if self.dp_epsilon == 0:
            return None
        return PrivacyConfig(epsilon=self.dp_epsilon, delta=self.dp_delta or None,
                             max_grad_norm=self.dp_max_grad_norm, accountant=self.dp_accountant)

    @property
    def glue_dir(self) -> str | None:
        return self.data_dir or None

    @property
    def faults(self) -> dict[int, str]:
        return parse_faults(self.faulty_clients)

    @property
    def spec(self) -> ModelSpec:
        """The model a client builds for this run; the round's state is loaded into it."""
        return self.model_spec(glue.get_task(self.task).num_labels)


def _coerce(cls, name: str, value):
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    try:
        return {"int": int, "float": float, "str": str}[kind](value)
    except (TypeError, ValueError):
        raise ValueError(f"run-config key {name.replace('_', '-')!r} expects {kind}, got {value!r}") from None


def round_lr(cfg: FedConfig, server_round: int) -> float:
    """The clients' learning rate in a round: constant, or cosine from lr in round 1 toward 0 after the last."""
    if cfg.lr_decay == "none":
        return cfg.learning_rate
    return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / cfg.num_server_rounds))


def sample_partitions(partitions: list[int], fraction: float, minimum: int, seed: int, rnd: int,
                      stream: int) -> list[int]:
    """A seeded choice of partition ids for one round (stream 0: train, 1: evaluate): the server's sampling,
    a public function of the data seed and the ids, so a client can tell in advance which rounds it trains."""
    if not partitions:
        return []
    k = min(len(partitions), max(int(len(partitions) * fraction), minimum))
    rng = np.random.default_rng([seed, rnd, stream])
    ordered = sorted(partitions)  # choose positions: an array of small ids and uint64 node ids would be float64
    return sorted(ordered[i] for i in rng.choice(len(ordered), size=k, replace=False))


def rounds_sampled(cfg: FedConfig, partition_id: int, num_partitions: int) -> int:
    """How many training rounds the server's schedule gives this partition when every partition's node is there."""
    return sum(partition_id in sample_partitions(list(range(num_partitions)), cfg.fraction_train,
                                                 cfg.min_train_nodes, cfg.data_seed, rnd, 0)
               for rnd in range(1, cfg.num_server_rounds + 1))


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A client's training seed: fixed by the run's data seed, the round and the partition, nothing else."""
    digest = hashlib.sha256(f"{seed}:{server_round}:{partition_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
