"""Every trainable method by name, with the defaults a user gets when naming none."""

from __future__ import annotations

from fedrp.adapters import METHODS as ADAPTERS
from fedrp.adapters import build_model, make_config
from fedrp.backbone import Backbone
from fedrp.baselines import BASELINES, BaselineModel
from fedrp.classifier import Classifier

METHODS = (*ADAPTERS, *BASELINES)

# The best of a sweep on SST-2 (1,000 training examples, one epoch, batch 32, MiniLM-L6):
# `python -m simulations.bench_glue --suite sweep`; the README lists every point.
DEFAULT_LR = {
    "slash": 3e-2, "jrwarp": 1e-2, "head": 3e-2, "full": 3e-4, "lora": 1e-2, "bitfit": 3e-3,
}

# Federated clients restart AdamW every round without warmup, and Adam's first steps move each
# weight by about the learning rate whatever its gradient: at the centralized rate SLaSh's
# global model swung between classes on SST-2 over 10 Dirichlet clients, at a third of it it
# climbed steadily (README, Federation). The other methods take about the same ratio.
FEDERATED_LR = {
    "slash": 1e-2, "jrwarp": 3e-3, "head": 1e-2, "full": 1e-4, "lora": 3e-3, "bitfit": 1e-3,
}

# SLaSh's clients train with SGD (momentum 0.9) instead: Adam's first steps after each round's
# restart move every weight of the head by about the rate, and under label skew the global model
# then sat on one class for many rounds. Chosen on 1,000 SST-2 training examples held out from
# the clients (10 Dirichlet(0.5) clients, 5 a round, 200 examples each, cosine decay, 20 rounds;
# `python -m simulations.tune`, README "Quick start"): SGD at 0.3 scored 0.803, AdamW at 5e-3
# 0.783 (mean of the last three rounds). The other methods keep AdamW at FEDERATED_LR: SGD rates for them were not measured.
FEDERATED_OPTIMIZER = {"slash": "sgd"}
FEDERATED_SGD_LR = {"slash": 0.3}


def federated_local(method: str, optimizer: str = "") -> tuple[str, float | None]:
    """A method's local optimizer in a federation (given, or its default) and that optimizer's rate (None: unmeasured)."""
    optimizer = optimizer or FEDERATED_OPTIMIZER.get(method, "adamw")
    rates = FEDERATED_SGD_LR if optimizer == "sgd" else FEDERATED_LR
    return optimizer, rates.get(method)


def build(method: str, backbone: Backbone, num_labels: int, pooling: str = "mask", *, d: int = 1024,
          seed: int = 0, distribution: str = "gaussian", position: str = "output", lora_rank: int = 8,
          projection_mode: str = "stored") -> Classifier:
    if method in ADAPTERS:
        extra = {"shift_position": position} if method == "slash" else {}
        config = make_config(method, d=d, seed=seed, distribution=distribution, pooling=pooling,
                             num_labels=num_labels, projection_mode=projection_mode, **extra)
        return build_model(backbone, config)
    if method in BASELINES:
        return BaselineModel(backbone, method, num_labels, pooling, lora_rank=lora_rank, seed=seed)
    raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def payload_bytes(model: Classifier, bytes_per_value: int = 4) -> int:
    """What one update of this method would send: every trainable value."""
    return model.num_trainable() * bytes_per_value
