"""A centralized run: one task, one method, the shared loop, dev metrics and the artifact."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from fedrp import artifact, data, glue
from fedrp.backbone import load_backbone
from fedrp.files import check_writable_folder
from fedrp.methods import RATES, build, check_max_length, get_method, payload_bytes
from fedrp.privacy.config import PrivacyConfig
from fedrp.privacy.engine import train_private
from fedrp.spec import MAX_LENGTH, TrainOptions
from fedrp.train import TrainConfig, dev_metrics, evaluate, select_device, train, use_bf16


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(TrainOptions):
    """What `fedrp train` runs: the model's and the training's options (fedrp.spec), and how it reports."""

    progress: bool | None = None
    privacy: PrivacyConfig | None = None  # sample-level DP-SGD


def run(cfg: RunConfig) -> dict:
    """Train, evaluate and (for slash and jrwarp) save the artifact; returns what `fedrp train --json` prints."""
    start = time.perf_counter()
    task = glue.get_task(cfg.task)
    device = select_device(cfg.device)
    if cfg.max_length < 8:
        raise ValueError(f"max-length must be at least 8 tokens, got {cfg.max_length}")
    lr = cfg.lr if cfg.lr is not None else RATES[cfg.method].centralized
    tcfg = TrainConfig(lr=lr, epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       schedule=cfg.schedule, warmup_ratio=cfg.warmup_ratio, bf16=cfg.bf16, seed=cfg.data_seed,
                       progress=cfg.progress)
    for split in task.dev_splits:  # a bad dev file found after training would throw the training away
        glue.load_split(task, split, cfg.data_dir)
    out = check_out(cfg, task)  # so would an adapter that cannot be written
    check_max_length(cfg.max_length, cfg.model or None, cfg.method)  # and the first example too long to embed
    backbone = load_backbone(cfg.model or None)
    full = data.load_tokenized(task, "train", backbone.tokenizer, cfg.pooling, cfg.max_length, cfg.data_dir)
    held_out = None
    if cfg.validation_samples:  # the same held-out examples and the same subset as a federation's
        held, rest = data.validation_split(len(full), cfg.validation_samples)
        full, held_out = full.select(rest), full.select(held)
    train_data = data.subset(full, cfg.max_train_samples, seed=cfg.data_seed)  # a federation's at the same seed
    model = build(cfg.model_spec(task.num_labels), backbone, cfg.data_seed)
    if cfg.privacy is None:
        result = train(model, train_data, tcfg, device)
    else:
        result = train_private(model, train_data, tcfg, cfg.privacy, device)
    check_finite(model)
    if held_out is None:
        metrics, n_eval = dev_metrics(model, task, backbone.tokenizer, cfg.pooling, cfg.max_length, cfg.data_dir,
                                      cfg.max_eval_samples, cfg.batch_size * 2, device)
    else:
        metrics, n_eval = evaluate(model, held_out, task, cfg.batch_size * 2, device), len(held_out)
    path = None
    if out is not None:
        art = artifact.from_model(model, task=task, metric=metrics)  # with the task's definition, not its data
        path = str(artifact.save(art, out, overwrite=cfg.overwrite))
    return {
        "task": task.name, "method": cfg.method, "metrics": metrics, "params": model.num_trainable(),
        "evaluated_on": "dev" if held_out is None else f"{len(held_out)} held-out training examples",
        "bytes_fp32": payload_bytes(model), "samples_per_second": result.samples_per_second,
        "wall_seconds": time.perf_counter() - start, "artifact": path,
        "train_seconds": result.seconds, "train_examples": len(train_data), "eval_examples": n_eval,
        "steps": result.steps, "final_loss": result.loss, "lr": lr, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "seed": cfg.seed, "data_seed": cfg.data_seed, "backbone": backbone.name, "device": device.type,
        "bf16": use_bf16(cfg.bf16, device), **({"privacy": result.privacy} if result.privacy else {}),
    }


def artifact_path(cfg: RunConfig, task: glue.Task) -> Path | None:
    """Where the run writes its adapter: None for a baseline, without --out, or when it reports on held-out
    training examples (an artifact's metric is a dev metric)."""
    if not get_method(cfg.method).writes_artifact or not cfg.out or cfg.validation_samples:
        return None
    return Path(cfg.out) / f"{task.name}-{cfg.method}.safetensors"


def check_out(cfg: RunConfig, task: glue.Task) -> Path | None:
    """The adapter's path, refused before training when it could not be written or would replace an earlier
    adapter without --overwrite."""
    path = artifact_path(cfg, task)
    if path is None:
        return None
    check_writable_folder(path.parent, "--out", "the adapter")
    if path.is_dir() or (path.exists() and not cfg.overwrite):
        raise FileExistsError(f"--out {cfg.out} already holds {path.name}: pass --overwrite to replace it, or choose "
                              "another --out")
    return path


def check_finite(model) -> None:
    """A diverged run ends here, in one line, rather than reporting metrics of NaN weights or saving them."""
    bad = sorted(k for k, p in model.trainable_parameters().items() if not torch.isfinite(p).all())
    if bad:
        raise FloatingPointError(f"training ended with non-finite values in {bad[:4]}; nothing was saved: lower "
                                 "the learning rate")


def evaluate_artifact(path: str | os.PathLike, task_name: str | None = None, data_dir: str | None = None,
                      max_eval_samples: int | None = None, batch_size: int = 64, max_length: int = MAX_LENGTH,
                      device: str = "auto", model_name: str | None = None) -> dict:
    """Dev metrics of a saved adapter on its task, or on another (a user's: its TOML file) with the same labels."""
    art = artifact.load(path)  # checked before the backbone loads
    task = glue.get_task(task_to_evaluate(art, path, task_name))
    check_same_labels(art, task)
    for split in task.dev_splits:
        glue.load_split(task, split, data_dir)
    check_max_length(max_length, model_name or art.backbone, art.method)
    model, art = artifact.load_model(path, model_name=model_name)
    metrics, n = dev_metrics(model, task, model.tokenizer, model.pooling, max_length, data_dir, max_eval_samples,
                             batch_size, select_device(device))
    return {"task": task.name, "method": art.method, "metrics": metrics, "params": art.params,
            "bytes_fp32": art.params * 4, "eval_examples": n, "artifact": str(path)}


def task_to_evaluate(art: artifact.Artifact, path: str | os.PathLike, given: str | None) -> str:
    """--task as given, else the GLUE task the adapter names; a user's task is known only from its TOML file."""
    if given:
        return given
    if not art.task:
        raise ValueError(f"{path} names no task: pass --task")
    builtin = glue.TASKS.get(art.task)
    if builtin is None or art.task_definition not in (None, artifact.task_definition(builtin)):
        raise ValueError(f"{path} was trained on your task {art.task!r}, whose data an adapter does not hold: pass "
                         f"--task with its TOML file (--task path/to/{art.task}.toml)")
    return art.task


def check_same_labels(art: artifact.Artifact, task: glue.Task) -> None:
    """The task's labels, in order, are the adapter's (a regression score for a regression head)."""
    if art.label_names and list(art.label_names) != list(task.label_names):
        raise ValueError(f"adapter was trained for {art.task or 'a task'} with labels {list(art.label_names)}; task "
                         f"{task.name} has labels {list(task.label_names) or '(a regression score)'}")
    outputs = art.config["num_labels"]
    if task.num_labels != outputs:
        trained = "a regression score" if outputs == 1 else f"{outputs} labels"
        raise ValueError(f"adapter was trained for {art.task or 'a task'} with {trained}; task {task.name} has "
                         f"{list(task.label_names) or 'a regression score'}")
