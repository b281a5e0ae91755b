"""A client's round (local training, with DP-SGD when the run sets a budget) and the evaluations."""

from __future__ import annotations

import dataclasses
import math

import datasets
import numpy as np
import torch

from fedrp import glue
from fedrp.classifier import Classifier
from fedrp.data import label_counts
from fedrp.drift import Correction
from fedrp.federation.clientdata import validation_data
from fedrp.federation.config import FedConfig, round_lr, round_seed, rounds_sampled
from fedrp.federation.model import model_for
from fedrp.payload import array_refusal, load_trainable_state, trainable_state
from fedrp.privacy.budget import ClientBudget
from fedrp.privacy.engine import poisson_schedule, train_private
from fedrp.refusals import StateMismatch
from fedrp.train import TrainConfig, TrainResult, dev_metrics, evaluate, select_device, train


def local_train(cfg: FedConfig, state: dict[str, np.ndarray], train_data: datasets.Dataset, server_round: int,
                partition_id: int, device: str = "auto", budget: ClientBudget | None = None,
                num_partitions: int | None = None, correction: Correction | None = None,
                label_prior: tuple[float, ...] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Start from the server's state, train on local data, return the new state and metrics.

    With dp-epsilon set, training is DP-SGD and `budget` (this client's accounting so far,
    updated in place) refuses a round that would overspend; `num_partitions` (None: unknown, as
    for a node with its own data file) lets the client size its noise for the rounds it is sampled in.
    `correction`: the terms the server's rule adds to the gradients (round_correction), recording into it;
    `label_prior`: the federation's log prior, for local-loss prior-relative (round_prior).
    """
    model = model_for(cfg)
    load_trainable_state(model, state)
    metrics = {"num-examples": float(len(train_data))}
    if cfg.privacy is None:
        tcfg = dataclasses.replace(local_train_config(cfg, train_data, server_round, partition_id,
                                                      label_prior=label_prior), correction=correction)
        result = train(model, train_data, tcfg, select_device(device))
    else:
        result = _train_private_round(cfg, model, train_data, server_round, partition_id, num_partitions, device,
                                      budget or ClientBudget(cfg.privacy), correction)
        metrics.update({"epsilon": result.privacy["epsilon"], "noise-multiplier": result.privacy["noise_multiplier"],
                        "dp-steps": float(result.privacy["steps"])})
    metrics.update({"train-loss": result.loss, "samples-per-second": result.samples_per_second,
                    "train-seconds": result.seconds})
    return trainable_state(model), metrics


def round_correction(config: dict, drift: dict[str, np.ndarray] | None,
                     sent: dict[str, np.ndarray]) -> Correction | None:
    """The gradient terms a round's message asks for: FedProx's and FedDyn's "proximal-mu", a per-client "drift"
    vector (SCAFFOLD's c - c_i, FedDyn's -g_i) checked like the weights, SCAFFOLD's "record-gradient"; None for
    a round that asks for none (FedAvg's). A malformed term is refused (StateMismatch)."""
    try:
        mu = float(config.get("proximal-mu", 0.0))
    except (TypeError, ValueError):
        mu = float("nan")
    if not (math.isfinite(mu) and mu >= 0):
        raise StateMismatch(f"the round's proximal-mu is {config.get('proximal-mu')!r}; expected a number of at least 0")
    if drift is not None:
        verdict = array_refusal(drift, sent, "the round's drift vector")
        if verdict is not None:
            raise StateMismatch(verdict[1])
    record = bool(config.get("record-gradient", False))
    if drift is None and not mu and not record:
        return None
    return Correction(linear=_tensors(drift) if drift is not None else None, proximal=mu,
                      anchor=_tensors(sent) if mu else None, record=record)


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items()}


def round_prior(config: dict, num_labels: int) -> tuple[float, ...] | None:
    """The federation's log label prior a round's message carries ("label-prior"), or None; one of the wrong
    length or not finite is refused."""
    if "label-prior" not in config:
        return None
    try:
        prior = tuple(float(x) for x in config["label-prior"])
    except (TypeError, ValueError):
        prior = ()
    if len(prior) != num_labels or not all(math.isfinite(x) for x in prior):
        raise StateMismatch(f"the round's label-prior {config['label-prior']!r} is not {num_labels} finite log "
                            "probabilities")
    return prior


def local_train_config(cfg: FedConfig, train_data: datasets.Dataset, server_round: int, partition_id: int,
                       counts: tuple[float, ...] | None = None,
                       label_prior: tuple[float, ...] | None = None) -> TrainConfig:
    """A client's local schedule for one round: no warmup (rounds are short), a seed fixed by round and partition.

    The logit offsets come from the client's label counts: its data's own without DP; under DP only
    the counts it released (`counts`), or none, since exact counts would escape the accounting. With
    local-loss prior-relative, the federation's log prior (`label_prior`) is taken from them.
    """
    task = glue.get_task(cfg.task)
    adjust = cfg.local_loss in ("logit-adjusted", "prior-relative") and not task.is_regression
    if adjust and cfg.privacy is None:
        counts = tuple(label_counts(train_data["label"], task.num_labels))
    offsets = prior_offsets(counts) if adjust and counts is not None else None
    if offsets is not None and cfg.local_loss == "prior-relative" and label_prior is not None:
        offsets = tuple(own - shared for own, shared in zip(offsets, label_prior, strict=True))
    epochs, batch, accumulate = cfg.local_epochs, cfg.local_batch_size, 1
    if cfg.local_steps:  # each step one pass: its batches' mean gradient (DP-SGD: one batch of them all)
        epochs, n = float(cfg.local_steps), len(train_data["label"])
        if cfg.privacy is None:
            accumulate = math.ceil(n / batch)
        else:
            batch = n
    return TrainConfig(lr=round_lr(cfg, server_round), optimizer=cfg.optimizer, epochs=epochs,
                       batch_size=batch, grad_accum=accumulate, max_grad_norm=cfg.local_clip or None,
                       bf16=cfg.bf16, schedule=cfg.schedule, warmup_ratio=0.0,
                       logit_offsets=offsets,
                       seed=round_seed(cfg.data_seed, server_round, partition_id), progress=False)


def _train_private_round(cfg: FedConfig, model: Classifier, train_data: datasets.Dataset, server_round: int,
                         partition_id: int, num_partitions: int | None, device: str,
                         budget: ClientBudget, correction: Correction | None = None) -> TrainResult:
    """One round of DP-SGD at the noise that lets this client train in each of its rounds within its epsilon.

    With dp-count-noise, the client first releases its label counts once (ClientBudget.release_counts);
    they set its logit offsets and per-class clipping norms. With dp-schedule "sampled", the noise is
    sized for the rounds the server's public sampling schedule gives this partition; should it be
    sampled more often (nodes missing), the budget check refuses the rounds that would overspend.
    """
    task = glue.get_task(cfg.task)
    balance = cfg.dp_count_noise > 0 and not task.is_regression
    if balance and budget.counts is None:
        budget.release_counts(train_data["label"], task.num_labels, cfg.dp_count_noise)
    tcfg = dataclasses.replace(local_train_config(cfg, train_data, server_round, partition_id,
                                                  budget.counts if balance else None), correction=correction)
    delta = budget.config.delta_for(len(train_data))
    rate, steps = poisson_schedule(len(train_data), tcfg.batch_size, tcfg.epochs)
    known = cfg.dp_schedule == "sampled" and num_partitions is not None
    rounds = max(1, rounds_sampled(cfg, partition_id, num_partitions)) if known else cfg.num_server_rounds
    noise = budget.noise_for_rounds(delta, rate, steps, rounds)
    budget.check(delta, noise, rate, steps)
    accountant = budget.accountant()
    result = train_private(model, train_data, tcfg, dataclasses.replace(budget.config, noise_multiplier=noise),
                           select_device(device), accountant, class_weights(budget.counts) if balance else None,
                           cfg.dp_z_share)
    budget.history = [tuple(h) for h in accountant.history]
    return result


def logit_offsets(labels, num_labels: int) -> tuple[float, ...]:
    """log of this client's label prior (add-one smoothed), added to the logits in local training.

    The local optimum then no longer encodes the client's own label mix, so the averaged heads
    swing less with the round's sampled clients (logit adjustment against label skew: Menon
    et al. 2021; FedLC, Zhang et al. 2022). The global model so trained answers for a uniform
    prior; the server evaluates it with the federation's prior added (federation_offsets).
    """
    return prior_offsets(label_counts(labels, num_labels))


def smoothed_counts(counts) -> np.ndarray:
    """Label counts (exact, or released with noise: clamped at 0), add-one smoothed."""
    return np.maximum(np.asarray(counts, dtype=np.float64), 0.0) + 1


def prior_offsets(counts) -> tuple[float, ...]:
    """log of the label prior from counts: the logit offsets."""
    kept = smoothed_counts(counts)
    return tuple(float(x) for x in np.log(kept / kept.sum()))


def federation_offsets(reported: list[list[int]]) -> tuple[float, ...] | None:
    """log of the label prior of the clients' reported counts, summed: what turns a logit-adjusted model's
    uniform-prior answer into one for the federation's label mix (Menon et al. 2021). None: no reports."""
    if not reported:
        return None
    return prior_offsets(np.sum(np.asarray(reported, dtype=np.float64), axis=0))


def class_weights(counts) -> tuple[float, ...]:
    """Per-class clipping weights from (released) label counts: the rarest class 1, a class k times as frequent 1/k."""
    kept = smoothed_counts(counts)
    return tuple(float(x) for x in kept.min() / kept)


def local_evaluate(cfg: FedConfig, state: dict[str, np.ndarray], eval_data: datasets.Dataset,
                   device: str = "auto") -> dict[str, float]:
    model = model_for(cfg)
    load_trainable_state(model, state)
    task = glue.get_task(cfg.task)
    return {"num-examples": float(len(eval_data)), **evaluate(model, eval_data, task, cfg.local_batch_size * 2, select_device(device))}


def server_evaluate(cfg: FedConfig, model: Classifier, state: dict[str, np.ndarray],
                    prior: tuple[float, ...] | None = None) -> dict[str, float]:
    """Centralized evaluation of the global state on the task's dev set (all dev splits), or on the
    held-out training examples when validation-samples is set; `prior`: logit offsets added before the argmax
    (federation_offsets)."""
    load_trainable_state(model, state)
    task = glue.get_task(cfg.task)
    if cfg.validation_samples:
        return evaluate(model, validation_data(cfg, model.tokenizer), task, cfg.local_batch_size * 2,
                        select_device("auto"), prior)
    metrics, _ = dev_metrics(model, task, model.tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir,
                             cfg.max_eval_samples or None, cfg.local_batch_size * 2, select_device("auto"), prior)
    return metrics
