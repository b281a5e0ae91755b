"""The model a client builds for a run, cached per process, and the identity a client proves before training."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fedrp.backbone import load_backbone
from fedrp.classifier import Classifier
from fedrp.federation.config import FedConfig
from fedrp.methods import build
from fedrp.payload import trainable_state
from fedrp.refusals import IdentityMismatch
from fedrp.spec import ModelSpec
from fedrp.tasks import Task, label_identity


@lru_cache(maxsize=2)
def _cached_model(spec: ModelSpec) -> Classifier:
    return build(spec, load_backbone(spec.model or None))


def model_for(cfg: FedConfig) -> Classifier:
    """The process's model for this run config (the backbone loads once per process)."""
    return _cached_model(cfg.spec)


def initial_state(cfg: FedConfig) -> dict[str, np.ndarray]:
    """The global model's first state: the spec's model, its head (and LoRA's A) drawn from the data seed."""
    return trainable_state(build(cfg.spec, load_backbone(cfg.model or None), cfg.data_seed))


def identity(model: Classifier) -> dict[str, str]:
    """What the server sends so a client can prove it runs the same backbone and projection."""
    return model.identity()


def check_labels(task: Task, sent: dict) -> None:
    """Refuse a round whose task maps label ids to other names than this device's task does: its examples
    would train under the wrong ids. (A server that sends no label map predates the check.)"""
    mine = label_identity(task)
    if "label-fingerprint" in sent and sent["label-fingerprint"] != mine["label-fingerprint"]:
        raise IdentityMismatch(f"label map mismatch: the run's task has {sent.get('label-map')}, this device's "
                               f"task {task.name} has {mine['label-map']}")


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
