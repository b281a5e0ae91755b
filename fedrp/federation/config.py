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
from fedrp.methods import check_frozen_head, check_max_length, federated_local
from fedrp.partition import check_options as check_partition
from fedrp.privacy.client_level import ClientLevelDP
from fedrp.privacy.config import ACCOUNTANTS, PrivacyConfig
from fedrp.rates import DP_BATCH_SIZE, FEDERATED_BATCH_SIZE
from fedrp.secagg import SecAggConfig
from fedrp.spec import BF16_MODES, MAX_LENGTH, ModelOptions, ModelSpec, Vocabulary, check_fields, option
from fedrp.train import OPTIMIZERS, SCHEDULES

LOCAL_LOSSES = ("logit-adjusted", "prior-relative", "ce")
EVAL_PRIORS = ("reported", "uniform")
LR_DECAYS = ("none", "cosine")
SECURE_AGGREGATIONS = ("none", "secagg+")
DP_SCHEDULES = ("sampled", "all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FedConfig(ModelOptions):
    """The run config ([tool.flwr.app.config] in pyproject.toml; Python names use _ for -): the model's
    options (fedrp.spec.ModelOptions), then the keys below, grouped by concern."""

    task: str = option("sst2", "a GLUE task (fedrp.glue.TASKS), or a task file of your own (.toml, "
                               "docs/guide/your-task.md)")
    # data: where the examples come from and how they are split over clients
    data_dir: str = option("", "GLUE folder (empty: $FEDRP_GLUE_DIR, else the Hugging Face Hub)")
    data_seed: int = option(0, "the training subset, partitions, client sampling, local shuffles and the initial "
                               "head and LoRA weights (not the projections: seed)", minimum=0)
    partition_scheme: str = option("dirichlet", "how the training examples are split over the clients",
                                   Vocabulary("fedrp.partition", "SCHEMES"))
    alpha: float = option(0.5, "Dirichlet concentration of each client's label mix: lower is more skewed")
    min_partition_size: int = option(10, "fewest examples a client may get", minimum=1)
    max_train_samples: int = option(0, "a seeded subset of the training set before partitioning; 0: all", minimum=0)
    max_train_samples_per_client: int = option(200, "cap on a client's examples; 0: its whole partition", minimum=0)
    max_eval_samples: int = option(0, "dev examples the server evaluates on; 0: the whole dev set", minimum=0)
    validation_samples: int = option(0, "> 0: hold out this many training examples and evaluate on them, not on dev "
                                        "(for choosing settings)", minimum=0)
    max_length: int = option(MAX_LENGTH, "tokens per example", minimum=8)
    # local training: what each sampled client does in a round
    local_epochs: float = option(1.0, "passes over a client's data per round")
    local_steps: int = option(0, "> 0: this many optimizer steps a round in place of local-epochs, each on the "
                                 "client's whole data (its batches' gradients averaged; under dp-epsilon one Poisson "
                                 "batch at rate 1); 1: FedSGD, whatever the clients' sizes", minimum=0)
    local_clip: float = option(1.0, "the L2 norm a local step's gradient is clipped to, without dp-epsilon (DP-SGD "
                                     "clips each example at dp-max-grad-norm); 0: off. FedSGD wants it off: each "
                                     "client's clipped step counts by its direction alone, whatever its size")
    lr: float = option(0.0, "the clients' rate in round 1; 0: the method's federated default for its local "
                            "optimizer, with or without dp-epsilon (fedrp.methods.federated_local)")
    local_optimizer: str = option("", "empty: the method's (AdamW); or adamw, or sgd (momentum 0.9)",
                                  ("", *OPTIMIZERS))
    local_loss: str = option("logit-adjusted", "the clients' loss: cross-entropy with each client's label prior "
                                               "offset out (logit_offsets); prior-relative: offset by the client's "
                                               "log prior minus the federation's (from the clients' reported counts), "
                                               "so the model answers for the federation's prior; or plain ce",
                             LOCAL_LOSSES)
    eval_prior: str = option("reported", "the label prior the server adds to a logit-adjusted model's logits when "
                                         "it evaluates: the clients' reported label counts, summed (each reports "
                                         "them once, in its first query; none under dp-epsilon, client-level DP or "
                                         "SecAgg+), or uniform (the plain logits)", EVAL_PRIORS)
    lr_decay: str = option("cosine", "the clients' rate over the rounds (round_lr)", LR_DECAYS)
    schedule: str = option("constant", "rate schedule within a client's round (rounds are short)", SCHEDULES)
    batch_size: int = option(0, f"local batches; 0: {FEDERATED_BATCH_SIZE} (more steps a round for the same "
                                f"compute), or {DP_BATCH_SIZE} with dp-epsilon (fewer, less noisy DP-SGD steps)",
                             minimum=0)
    bf16: str = option("auto", "bfloat16 autocast where the device has it natively", BF16_MODES)
    faulty_clients: str = option("", "testing: partitions that send corrupted replies, as "
                                     "'0:nan,1:wrong-fingerprint' (fedrp.faults)")
    # server: rounds, sampling, aggregation and the checks on replies
    num_server_rounds: int = option(20, "rounds of training", minimum=1)
    fraction_train: float = option(0.5, "share of the clients sampled to train each round, in (0, 1]")
    fraction_evaluate: float = option(0.5, "share of the clients sampled to evaluate each round, in [0, 1]")
    min_train_nodes: int = option(2, "fewest valid replies a round aggregates; fewer fail the run", minimum=1)
    eval_every: int = option(1, "the server evaluates after every eval-every rounds, and after the last", minimum=1)
    aggregation: str = option("fedavg", "the server's rule (server.strategy.STRATEGIES: the server checks it, "
                                        "since fedrp never imports server/)")
    server_lr: float = option(0.01, "fedadam's and fedyogi's server rate (eta)")
    server_momentum: float = option(0.9, "fedavgm: the server's momentum on the averaged update, in [0, 1) (its "
                                         "rate is 1 - momentum, so a steady update moves as far as fedavg's)")
    server_step: float = option(1.0, "fedavgm: a multiple of its rate 1 - momentum; with server-momentum 0 and a "
                                      "step above 1 the server moves past the clients' average (server "
                                      "extrapolation: small local steps, each round's progress scaled up)")
    trim_beta: float = option(0.2, "trimmed-mean: the share cut from each end, per coordinate")
    proximal_mu: float = option(0.01, "fedprox: the weight mu of the proximal term mu/2 ||w - w_global||^2 that "
                                      "clients add to their loss")
    feddyn_alpha: float = option(0.01, "feddyn: the weight alpha of its dynamic regularizer (the proximal term's, "
                                       "and 1/alpha times h leaves the server's mean)")
    norm_bound: float = option(0.0, "refuse an update whose L2 norm exceeds this; 0: off")
    norm_ratio: float = option(100.0, "refuse an update over this many times the round's median norm (3+ replies); "
                                      "0: off")
    round_timeout: float = option(600.0, "seconds the server waits for a round's replies")
    store: str = option("runs/fedrp.sqlite", "the run store (SQLite) the server writes and the dashboard reads")
    checkpoint_dir: str = option("runs/checkpoints", "where each round's state is saved (run-N/round-NNNN)")
    resume_from: str = option("", "a checkpoint folder or file to continue a run from")
    dashboard_port: int = option(0, "> 0: the ServerApp serves the dashboard over the store beside the run",
                                 minimum=0)
    dashboard_host: str = option("127.0.0.1", "the dashboard's address; anything but loopback needs "
                                              "$FEDRP_DASHBOARD_TOKEN")
    # differential privacy: sample-level on each client, client-level on the server
    dp_epsilon: float = option(0.0, "sample-level DP budget of each client over the whole run; 0: off")
    dp_delta: float = option(0.0, "0: 1/(2n) for a client's n examples")
    dp_max_grad_norm: float = option(1.0, "per-example clipping norm of DP-SGD")
    dp_accountant: str = option("rdp", "the privacy accountant", ACCOUNTANTS)
    dp_count_noise: float = option(10.0, "noise of the one-off Gaussian release of a client's label counts, which "
                                         "set its logit offsets and per-class clipping norms under DP; 0: neither "
                                         "(plain loss, one norm)")
    dp_schedule: str = option("sampled", "noise for the rounds the public sampling schedule gives a client, or for "
                                         "all rounds", DP_SCHEDULES)
    dp_z_share: float = option(0.0, "with dp-count-noise: z's share of the clipping norm squared, the head's the "
                                    "rest; 0: one norm")
    client_dp_noise: float = option(0.0, "client-level DP on the server (DP-FedAvg): noise multiplier; 0: off")
    client_dp_clip: float = option(1.0, "client-level DP: L2 bound of each client's whole update")
    client_dp_delta: float = option(1e-5, "client-level DP: delta of the federation's epsilon")
    # secure aggregation
    secure_aggregation: str = option("none", "secagg+: the server learns only the weighted mean update",
                                     SECURE_AGGREGATIONS)
    secagg_clip: float = option(8.0, "SecAgg+ clipping range of every update coordinate (times max-weight / weight)")
    secagg_quantization: int = option(4194304, "SecAgg+ quantisation levels over [-clip, clip] (2^22)", minimum=2)
    secagg_max_weight: float = option(0.0, "cap on a client's weight; 0: max-train-samples-per-client, else 1000")

    def __post_init__(self) -> None:
        # The split's options first, by the check `fedrp partition` makes (check_fields would repeat two of them).
        check_partition(self.partition_scheme, self.alpha, self.min_partition_size,
                        ("partition-scheme", "alpha", "min-partition-size"))
        check_fields(self, dataclasses.fields(self))  # choices and integer minimums, the model's options too
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be positive, or 0 for the method's federated default; got {self.lr}")
        if not self.lr and self._local()[1] is None:
            dp = " under dp-epsilon" if self.dp_epsilon else ""
            raise ValueError(f"{self.method} has no measured federated rate for local-optimizer "
                             f"{self._local()[0]!r}{dp}: set lr")
        glue.get_task(self.task)
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError(f"fraction-train must be in (0, 1], got {self.fraction_train}")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise ValueError(f"fraction-evaluate must be in [0, 1], got {self.fraction_evaluate}")
        for key, value in (("local-epochs", self.local_epochs), ("server-lr", self.server_lr),
                           ("round-timeout", self.round_timeout), ("proximal-mu", self.proximal_mu),
                           ("feddyn-alpha", self.feddyn_alpha), ("server-step", self.server_step)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a positive number, got {value}")
        if not (math.isfinite(self.server_momentum) and 0.0 <= self.server_momentum < 1.0):
            raise ValueError(f"server-momentum must be in [0, 1), got {self.server_momentum}")
        if not (math.isfinite(self.local_clip) and self.local_clip >= 0):
            raise ValueError(f"local-clip must be 0 (off) or positive, got {self.local_clip}")
        if not (math.isfinite(self.norm_bound) and self.norm_bound >= 0):
            raise ValueError(f"norm-bound must be 0 (off) or positive, got {self.norm_bound}")
        if not (math.isfinite(self.norm_ratio) and (self.norm_ratio == 0 or self.norm_ratio > 1)):
            raise ValueError(f"norm-ratio must be 0 (off) or above 1, got {self.norm_ratio}")
        if not (math.isfinite(self.trim_beta) and 0.0 <= self.trim_beta < 0.5):
            raise ValueError(f"trim-beta must be in [0, 0.5) (the share cut from each end), got {self.trim_beta}")
        parse_faults(self.faulty_clients)  # a typo fails before any work
        if self.client_dp is not None and self.aggregation != "fedavg":  # client_dp checks the client-dp-* values
            raise ValueError(f"client-level DP (client-dp-noise) averages clipped updates: it needs aggregation "
                             f"fedavg, got {self.aggregation!r}")
        if not (math.isfinite(self.dp_epsilon) and self.dp_epsilon >= 0):
            raise ValueError(f"dp-epsilon must be 0 (no DP) or a finite positive budget, got {self.dp_epsilon}")
        if not (math.isfinite(self.dp_count_noise) and self.dp_count_noise >= 0):
            raise ValueError(f"dp-count-noise must be 0 (off) or positive, got {self.dp_count_noise}")
        if not 0.0 <= self.dp_z_share < 1.0:
            raise ValueError(f"dp-z-share must be in [0, 1), got {self.dp_z_share}")
        _ = self.secagg, self.privacy  # bad secagg-* and dp-* values fail here, not in round 1
        check_frozen_head(self.frozen_head, glue.get_task(self.task).num_labels, self.dp_z_share)
        if self.local_loss == "prior-relative" and not self.reports_label_counts:
            raise ValueError("local-loss prior-relative needs the clients' label counts, which they report only for a "
                             "classification task without dp-epsilon, client-level DP or SecAgg+")

    def _secure_aggregation(self) -> SecAggConfig | None:
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

    def _local(self) -> tuple[str, float | None]:
        return federated_local(self.method, self.local_optimizer, private=self.dp_epsilon > 0)

    @property
    def learning_rate(self) -> float:
        """The clients' rate in round 1: the one set, else the method's for its optimizer, with or without DP."""
        return self.lr if self.lr > 0 else self._local()[1]

    @property
    def optimizer(self) -> str:
        """The clients' local optimizer: the one set, else the method's default, with or without DP."""
        return self._local()[0]

    @property
    def local_batch_size(self) -> int:
        """The clients' batch: the one set, else the default with or without DP."""
        return self.batch_size or (DP_BATCH_SIZE if self.dp_epsilon > 0 else FEDERATED_BATCH_SIZE)

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
    def reports_label_counts(self) -> bool:
        """Whether clients tell the server their label counts, for the prior it evaluates with (eval_prior).

        Never under DP, client-level DP or SecAgg+: exact counts would escape their guarantees.
        """
        wanted = self.local_loss == "prior-relative" or (self.eval_prior == "reported"
                                                         and self.local_loss == "logit-adjusted")
        return (wanted and not glue.get_task(self.task).is_regression
                and self.privacy is None and self.client_dp is None and self.secagg is None)

    def evaluation_prior(self, prior: tuple[float, ...] | None) -> tuple[float, ...] | None:
        """What the server adds to the logits when it evaluates: the federation's prior for a logit-adjusted model
        (which answers for a uniform prior), nothing for the others (prior-relative's already holds it)."""
        return prior if self.local_loss == "logit-adjusted" else None

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


def check_run_max_length(cfg: FedConfig) -> None:
    """Refuse a max-length the run's backbone cannot embed, from its config alone (no weights): call it before a
    run starts, since a client would otherwise fail on its first longer example, round after round."""
    check_max_length(cfg.max_length, cfg.model or None, cfg.method, "max-length")


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
