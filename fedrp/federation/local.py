"""A client's round (local training, with DP-SGD when the run sets a budget) and the evaluations."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np

from fedrp import glue
from fedrp.centralized import dev_metrics
from fedrp.classifier import Classifier
from fedrp.federation.clientdata import validation_data
from fedrp.federation.config import FedConfig, round_lr, round_seed
from fedrp.federation.model import model_for
from fedrp.payload import load_trainable_state, trainable_state
from fedrp.privacy.budget import ClientBudget
from fedrp.privacy.engine import poisson_schedule, train_private
from fedrp.train import TrainConfig, TrainResult, evaluate, select_device, train


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
