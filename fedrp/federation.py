"""The federated task, without Flower: run config, the model and data a client needs, local rounds.

The Flower apps in clients/ and server/ are thin wrappers over these functions, so the same
logic runs under the simulation engine, the deployment engine and plain Python tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from functools import cached_property, lru_cache
from pathlib import Path

import datasets
import flwr_datasets
import numpy as np

from fedrp import cache, data, glue
from fedrp.adapters import AdapterModel
from fedrp.backbone import load_backbone
from fedrp.centralized import dev_metrics
from fedrp.classifier import Classifier
from fedrp.faults import parse_faults
from fedrp.methods import build, federated_local
from fedrp.partition import partition, partition_labels
from fedrp.payload import load_trainable_state, trainable_state
from fedrp.privacy.budget import ClientBudget
from fedrp.privacy.client_level import ClientLevelDP
from fedrp.privacy.config import PrivacyConfig
from fedrp.privacy.engine import poisson_schedule, train_private
from fedrp.refusals import IdentityMismatch, LocalDataError
from fedrp.secagg import SecAggConfig
from fedrp.spec import ModelOptions, ModelSpec
from fedrp.train import OPTIMIZERS, TrainConfig, TrainResult, evaluate, select_device, train

VALIDATION_SEED = 20261128  # the held-out validation examples do not move with the run seed
PARTITION_CACHE_VERSION = 2  # bump when fedrp.partition changes which indices a client gets
LOCAL_LOSSES = ("logit-adjusted", "ce")
LR_DECAYS = ("none", "cosine")
SECURE_AGGREGATIONS = ("none", "secagg+")


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


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A client's training seed: fixed by the run's data seed, the round and the partition, nothing else."""
    digest = hashlib.sha256(f"{seed}:{server_round}:{partition_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ---- models, cached per process ------------------------------------------------------------

@lru_cache(maxsize=2)
def _cached_model(spec: ModelSpec) -> Classifier:
    return build(spec, load_backbone(spec.model or None))


def model_for(cfg: FedConfig) -> Classifier:
    """The process's model for this run config (the backbone loads once per process)."""
    return _cached_model(cfg.spec)


def initial_state(cfg: FedConfig) -> dict[str, np.ndarray]:
    return trainable_state(build(cfg.spec, load_backbone(cfg.model or None)))


def identity(model: Classifier) -> dict[str, str]:
    """What the server sends so a client can prove it runs the same backbone and projection."""
    ident = {"backbone": model.backbone_name, "backbone-hash": model.backbone_config_hash}
    if isinstance(model, AdapterModel):
        ident.update(spec=model.spec.canonical_json(), fingerprint=model.fingerprint)
    return ident


def check_identity(model: Classifier, sent: dict) -> None:
    """Refuse to train when this device's backbone or projection differs from the run's."""
    mine = identity(model)
    if sent.get("backbone-hash") != mine["backbone-hash"]:
        raise IdentityMismatch(
            f"backbone mismatch: the run uses {sent.get('backbone')!r} (config hash {str(sent.get('backbone-hash'))[:12]}), "
            f"this device has {mine['backbone']!r} (config hash {mine['backbone-hash'][:12]})"
        )
    if "fingerprint" in mine:
        if sent.get("spec") != mine["spec"]:
            raise IdentityMismatch(f"projection spec mismatch: the run sends {sent.get('spec')}, this device builds {mine['spec']}")
        if sent.get("fingerprint") != mine["fingerprint"]:
            raise IdentityMismatch(
                f"projection fingerprint mismatch: the run sends {str(sent.get('fingerprint'))[:16]}..., "
                f"this device builds {mine['fingerprint'][:16]}..."
            )


# ---- data --------------------------------------------------------------------------------

def _pool_train(cfg: FedConfig, tokenizer) -> tuple[datasets.Dataset, tuple[int | float, ...]]:
    """The examples the clients share out, and their labels (read once per process, not once per round)."""
    return _pool(cfg.task, tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir, cfg.validation_samples,
                 cfg.max_train_samples)


@lru_cache(maxsize=4)
def _pool(task: str, tokenizer, pooling: str, max_length: int, glue_dir: str | None, validation_samples: int,
          max_train_samples: int) -> tuple[datasets.Dataset, tuple[int | float, ...]]:
    full = data.load_tokenized(task, "train", tokenizer, pooling, max_length, glue_dir)
    if validation_samples:
        full = full.select(validation_split(len(full), validation_samples)[1])
    pool = data.subset(full, max_train_samples or None, seed=0)  # the centralized runs' subset
    return pool, tuple(np.asarray(pool.with_format("numpy")["label"]).tolist())


def validation_data(cfg: FedConfig, tokenizer) -> datasets.Dataset:
    """The training examples held out by validation-samples: where settings are chosen instead of on dev."""
    full = data.load_tokenized(cfg.task, "train", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)
    return full.select(validation_split(len(full), cfg.validation_samples)[0])


def validation_split(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, rest) indices of a training set: a fixed seeded choice, so every run tunes on the same examples."""
    if not 0 < size < n:
        raise ValueError(f"validation-samples must be between 1 and {n - 1} for {n} training examples, got {size}")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    return np.sort(order[:size]), np.sort(order[size:])


@lru_cache(maxsize=4)
def _partitions(task: str, labels: tuple, num_partitions: int, scheme: str, alpha: float,
                seed: int, min_size: int) -> tuple[np.ndarray, ...]:
    """Every client's indices, cached on disk: each deployed message runs in a fresh process."""
    bins = partition_labels(labels, glue.get_task(task).is_regression)

    def build() -> dict[str, np.ndarray]:
        parts = partition(bins, num_partitions, scheme, alpha, seed, min_size)
        return {str(i): np.asarray(p, dtype=np.int64) for i, p in enumerate(parts)}

    name = cache.key(PARTITION_CACHE_VERSION, flwr_datasets.__version__, task, num_partitions, scheme, alpha, seed,
                     min_size, cache.digest({"labels": np.asarray(bins)}))
    arrays = cache.load_or_build("partitions", name, build)
    return tuple(arrays[str(i)] for i in range(num_partitions))


def client_indices(cfg: FedConfig, labels: list, partition_id: int, num_partitions: int) -> np.ndarray:
    if not 0 <= partition_id < num_partitions:
        raise LocalDataError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    parts = _partitions(cfg.task, tuple(labels), num_partitions, cfg.partition_scheme, cfg.alpha, cfg.data_seed,
                        cfg.min_partition_size)
    return parts[partition_id]


def warm_caches(cfg: FedConfig, num_partitions: int) -> None:
    """Tokenize the splits and draw the partitions into the on-disk caches, so that clients only read them."""
    tokenizer = load_backbone(cfg.model or None).tokenizer
    _, labels = _pool_train(cfg, tokenizer)
    client_indices(cfg, labels, 0, num_partitions)
    data.load_tokenized(cfg.task, "dev", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)


def client_train_data(cfg: FedConfig, tokenizer, partition_id: int, num_partitions: int) -> datasets.Dataset:
    """This client's share of the training set, capped at max-train-samples-per-client."""
    pool, labels = _pool_train(cfg, tokenizer)
    idx = client_indices(cfg, labels, partition_id, num_partitions)
    part = pool.select(idx)
    return data.subset(part, cfg.max_train_samples_per_client or None, seed=cfg.data_seed)


def client_eval_data(cfg: FedConfig, tokenizer, partition_id: int, num_partitions: int) -> datasets.Dataset:
    """This client's share of the dev set (or of the held-out training examples), split like the training set."""
    if cfg.validation_samples:  # tuning runs never look at dev, on the server or on a client
        dev = validation_data(cfg, tokenizer)
    else:
        dev = data.load_tokenized(cfg.task, "dev", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)
    return dev.select(client_indices(cfg, dev["label"], partition_id, num_partitions))


def local_data_file(path: str, task: glue.Task, tokenizer, cfg: FedConfig) -> datasets.Dataset:
    """A deployed node's own examples: .jsonl/.json or .csv/.tsv with text, optional pair, label."""
    p = Path(path)
    if not p.is_file():
        raise LocalDataError(f"no local data file at {p}: expected .jsonl or .tsv with columns text, [pair,] label")
    if p.suffix not in (".jsonl", ".json", ".tsv", ".csv"):
        raise LocalDataError(f"local data file {p} must end in .jsonl, .json, .tsv or .csv")
    try:
        if p.suffix in (".jsonl", ".json"):
            ds = datasets.Dataset.from_json(str(p))
        else:
            ds = datasets.Dataset.from_csv(str(p), sep="\t" if p.suffix == ".tsv" else ",")
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as err:
        raise LocalDataError(f"{p} cannot be read as {p.suffix[1:]}: {str(err).splitlines()[0] if str(err) else err!r}") from err
    if not {"text", "label"} <= set(ds.column_names):
        raise LocalDataError(f"{p} has columns {ds.column_names}; expected text, [pair,] label")

    def label(row):
        value = row["label"]
        if task.is_regression:
            return {"label": float(value)}
        if isinstance(value, str) and not value.isdigit():
            if value not in task.label_names:
                raise LocalDataError(f"{p}: label {value!r} is not a {task.name} label; expected one of {task.label_names}")
            return {"label": task.label_names.index(value)}
        if not 0 <= int(value) < task.num_labels:
            raise LocalDataError(f"{p}: label {value!r} is out of range; expected one of {task.label_names} or 0..{task.num_labels - 1}")
        return {"label": int(value)}

    ds = ds.map(label)
    return data.tokenize(ds, tokenizer, cfg.pooling, cfg.max_length)


# ---- a client's round --------------------------------------------------------------------

def local_train(cfg: FedConfig, state: dict[str, np.ndarray], train_data: datasets.Dataset, server_round: int,
                partition_id: int, device: str = "auto",
                budget: ClientBudget | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Start from the server's state, train on local data, return the new state and metrics.

    With dp-epsilon set, training is DP-SGD and `budget` (this client's accounting so far,
    updated in place) refuses a round that would overspend.
    """
    model = model_for(cfg)
    load_trainable_state(model, state)
    tcfg = local_train_config(cfg, train_data, server_round, partition_id)
    metrics = {"num-examples": float(len(train_data))}
    if cfg.privacy is None:
        result = train(model, train_data, tcfg, select_device(device))
    else:
        result = _train_private_round(cfg, model, train_data, tcfg, device, budget or ClientBudget(cfg.privacy))
        metrics.update({"epsilon": result.privacy["epsilon"], "noise-multiplier": result.privacy["noise_multiplier"],
                        "dp-steps": float(result.privacy["steps"])})
    metrics.update({"train-loss": result.loss, "samples-per-second": result.samples_per_second,
                    "train-seconds": result.seconds})
    return trainable_state(model), metrics


def local_train_config(cfg: FedConfig, train_data: datasets.Dataset, server_round: int,
                       partition_id: int) -> TrainConfig:
    """A client's local schedule for one round: no warmup (rounds are short), a seed fixed by round and partition."""
    task = glue.get_task(cfg.task)
    adjust = cfg.local_loss == "logit-adjusted" and not task.is_regression
    return TrainConfig(lr=round_lr(cfg, server_round), optimizer=cfg.optimizer, epochs=cfg.local_epochs,
                       batch_size=cfg.batch_size,
                       bf16=cfg.bf16, schedule=cfg.schedule, warmup_ratio=0.0,
                       logit_offsets=logit_offsets(train_data["label"], task.num_labels) if adjust else None,
                       seed=round_seed(cfg.data_seed, server_round, partition_id), progress=False)


def _train_private_round(cfg: FedConfig, model: Classifier, train_data: datasets.Dataset, tcfg: TrainConfig,
                         device: str, budget: ClientBudget) -> TrainResult:
    """One round of DP-SGD at the noise that lets this client train in every round within its epsilon."""
    delta = budget.config.delta_for(len(train_data))
    rate, steps = poisson_schedule(len(train_data), tcfg.batch_size, tcfg.epochs)
    noise = budget.noise_for_rounds(delta, rate, steps, cfg.num_server_rounds)
    budget.check(delta, noise, rate, steps)
    accountant = budget.accountant()
    result = train_private(model, train_data, tcfg, dataclasses.replace(budget.config, noise_multiplier=noise),
                           select_device(device), accountant)
    budget.history = [tuple(h) for h in accountant.history]
    return result


def logit_offsets(labels, num_labels: int) -> tuple[float, ...]:
    """log of this client's label prior (add-one smoothed), added to the logits in local training.

    The local optimum then no longer encodes the client's own label mix, so the averaged heads
    swing less with the round's sampled clients (logit adjustment against label skew: Menon
    et al. 2021; FedLC, Zhang et al. 2022). Evaluation and inference use the plain logits.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)[:num_labels]
    return tuple(float(x) for x in np.log((counts + 1) / (counts.sum() + num_labels)))


def local_evaluate(cfg: FedConfig, state: dict[str, np.ndarray], eval_data: datasets.Dataset,
                   device: str = "auto") -> dict[str, float]:
    model = model_for(cfg)
    load_trainable_state(model, state)
    task = glue.get_task(cfg.task)
    return {"num-examples": float(len(eval_data)), **evaluate(model, eval_data, task, cfg.batch_size * 2, select_device(device))}


def server_evaluate(cfg: FedConfig, model: Classifier, state: dict[str, np.ndarray]) -> dict[str, float]:
    """Centralized evaluation of the global state on the task's dev set (all dev splits), or on the
    held-out training examples when validation-samples is set."""
    load_trainable_state(model, state)
    task = glue.get_task(cfg.task)
    if cfg.validation_samples:
        return evaluate(model, validation_data(cfg, model.tokenizer), task, cfg.batch_size * 2, select_device("auto"))
    metrics, _ = dev_metrics(model, task, model.tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir,
                             cfg.max_eval_samples or None, cfg.batch_size * 2, select_device("auto"))
    return metrics

