"""The one local training loop: centralized runs and federated clients both call `train`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from fedrp import metrics as glue_metrics
from fedrp.classifier import Classifier
from fedrp.data import load_tokenized, loader, subset
from fedrp.drift import Correction
from fedrp.glue import Task
from fedrp.spec import BF16_MODES

SCHEDULES = ("linear", "constant")
READ_LOSS_EVERY = 50  # optimizer steps between reads of the loss on an accelerator (on a CPU: every step)
OPTIMIZERS = ("adamw", "sgd")


@dataclasses.dataclass
class TrainConfig:
    lr: float = 3e-2
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9): steps in proportion to the gradient, not its sign
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    schedule: str = "linear"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    logit_offsets: tuple[float, ...] | None = None  # added to the logits in training only (logit adjustment)
    correction: Correction | None = None  # a federated objective's extra gradient terms (fedrp.drift)
    bf16: str = "auto"  # auto | on | off
    seed: int = 0  # shuffles, and dropout through seeded()
    progress: bool | None = None  # None: only on a terminal

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.bf16 not in BF16_MODES:
            raise ValueError(f"bf16 must be auto, on or off, got {self.bf16!r}")
        for name in ("lr", "epochs", "batch_size", "grad_accum"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be positive and finite, got {getattr(self, name)!r}")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise ValueError(f"max_grad_norm must be 0 or None (off) or a positive number, got {self.max_grad_norm!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup-ratio must be in [0, 1), got {self.warmup_ratio!r}")


@dataclasses.dataclass
class TrainResult:
    steps: int
    examples: int
    seconds: float
    loss: float  # mean over the last optimizer step's micro-batches
    privacy: dict | None = None  # DP training: what was spent (fedrp.privacy.accounting.report)

    @property
    def samples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


def select_device(name: str = "auto") -> torch.device:
    """auto: CUDA, then MPS, then CPU; a named device must exist in this torch build and machine."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"device {name!r} is not a torch device: expected auto, cpu, cuda, cuda:N or mps") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
        if not available.get(device.type, False):
            raise ValueError(f"device {name!r} is not available here (torch {torch.__version__}); "
                             f"expected one of {[k for k, v in available.items() if v]} or auto")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # native bf16 (AVX512-BF16 / AMX); elsewhere it would be emulated and slow
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def use_bf16(setting: str, device: torch.device) -> bool:
    if setting == "off":
        return False
    supported = bf16_supported(device)
    if setting == "on" and not supported:
        raise ValueError(f"bf16 was asked for, but {device.type} here has no native bf16 support")
    return supported


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def store_frozen_in_bf16(model: torch.nn.Module) -> None:
    """Keep weights that do not train in bf16 once, instead of autocast re-casting them every call.

    Autocast caches its bf16 copies only of weights that require grad, so a frozen backbone
    would be cast anew in every forward pass. Trainable weights stay fp32, and so do the frozen
    ones of a module that also trains (BitFit's LayerNorms: layer_norm refuses a bf16 weight
    beside an fp32 bias).
    """
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own):
            continue
        for p in own:
            if p.is_floating_point() and p.dtype != torch.bfloat16:
                p.data = p.data.to(torch.bfloat16)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Warmup, then linear decay to 0 or a constant rate."""
    name = "linear" if config.schedule == "linear" else "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def with_offsets(logits: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """Logits plus the logit-adjustment offsets, in at least float32 (float64 stays float64)."""
    if offsets is None:
        return logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits + offsets.to(logits.dtype)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for classes; MSE on the single output for a regression task (STS-B)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if logits.shape[-1] == 1 and labels.is_floating_point():
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype), reduction=reduction)
    return torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Dropout (and any other draw from torch's global generator) follows `seed`, not what ran before in
    this process: a federated client trains alike in a Ray actor and in-process, and so do bench cells."""
    with torch.random.fork_rng():  # the caller's generator state comes back afterwards
        torch.manual_seed(seed)
        yield


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum: a federated client restarts its optimizer every round, and Adam's
    first steps move every weight by about the rate whatever the size of its gradient."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def train(model: Classifier, data: datasets.Dataset, config: TrainConfig, device: torch.device | None = None) -> TrainResult:
    """AdamW over the model's trainable parameters, warmup then linear decay (or constant)."""
    device = device or select_device()
    model.to(device).train()
    pin = device.type == "cuda"
    batches = loader(data, model.tokenizer, config.batch_size, shuffle=True, seed=config.seed, pin_memory=pin)
    micro_batches = math.ceil(len(batches) * config.epochs)
    total_steps = math.ceil(micro_batches / config.grad_accum)
    named = model.trainable_parameters()
    params = list(named.values())
    optimizer = make_optimizer(params, config)
    scheduler = make_scheduler(optimizer, config, total_steps)
    bf16 = use_bf16(config.bf16, device)
    if bf16:
        store_frozen_in_bf16(model)
    offsets = None if config.logit_offsets is None else torch.tensor(config.logit_offsets, device=device)
    disable = None if config.progress is None else not config.progress
    bar = tqdm(total=total_steps, desc="training", unit="step", disable=disable, leave=False)
    read_every = 1 if device.type == "cpu" else READ_LOSS_EVERY
    losses = _StepLosses(total_steps, config.lr, bar)

    examples, step, seen, window, in_step = 0, 0, 0, [], 0
    start = time.perf_counter()
    epoch = 0
    with seeded(config.seed):
        while seen < micro_batches:
            if epoch > 0:  # reshuffle per epoch, still determined by the seed
                batches = loader(data, model.tokenizer, config.batch_size, shuffle=True, seed=config.seed + epoch,
                                 pin_memory=pin)
            for batch in batches:
                if seen >= micro_batches:
                    break
                batch = _to(batch, device)
                labels = batch.pop("labels")
                with autocast(device, bf16):
                    logits = model(**batch)
                loss = loss_fn(with_offsets(logits, offsets), labels)
                # Accumulated, a step's gradient is the mean over its examples: a short last batch weighs its share.
                (loss if config.grad_accum == 1 else loss * len(labels)).backward()
                window.append(loss.detach())
                examples += len(labels)
                in_step += len(labels)
                seen += 1
                if seen % config.grad_accum == 0 or seen == micro_batches:
                    if config.grad_accum > 1:
                        for p in params:
                            if p.grad is not None:
                                p.grad.div_(in_step)
                    in_step = 0
                    if config.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    if config.correction is not None:
                        config.correction.apply(named)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    bar.update(1)
                    losses.add(torch.stack(window).mean())
                    window = []
                    if step % read_every == 0:
                        losses.read()
            epoch += 1
    last_loss = losses.read()
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainResult(steps=step, examples=examples, seconds=time.perf_counter() - start, loss=last_loss)


class _StepLosses:
    """Each optimizer step's mean loss, kept on the device and read back in groups: a read is a host
    sync, which on an accelerator would stall its queue of work at every step."""

    def __init__(self, total_steps: int, lr: float, bar: tqdm) -> None:
        self.total_steps, self.lr, self.bar = total_steps, lr, bar
        self.pending: list[torch.Tensor] = []
        self.read_steps = 0
        self.last = float("nan")

    def add(self, loss: torch.Tensor) -> None:
        self.pending.append(loss)

    def read(self) -> float:
        """The newest step's loss; a non-finite one stops training with the step it appeared at."""
        if self.pending:
            values = torch.stack(self.pending).float().cpu().tolist()
            for i, value in enumerate(values):
                if not math.isfinite(value):
                    self.bar.close()
                    raise FloatingPointError(
                        f"training loss became {value} at step {self.read_steps + i + 1} of {self.total_steps} "
                        f"(lr {self.lr}); lower the learning rate or check the data"
                    )
            self.read_steps += len(values)
            self.pending, self.last = [], values[-1]
            self.bar.set_postfix(loss=f"{self.last:.4f}")
        return self.last


@torch.no_grad()
def predictions(model: Classifier, data: datasets.Dataset, batch_size: int = 64,
                device: torch.device | None = None,
                logit_offsets: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions): class ids, or scores for a single-output head; `logit_offsets` are added to
    the logits before the argmax (a label prior, for a model trained with logit adjustment)."""
    device = device or select_device()
    offsets = None if logit_offsets is None else torch.tensor(logit_offsets, dtype=torch.float32, device=device)
    model.to(device).eval()
    preds, labels = [], []
    bf16 = use_bf16("auto", device)
    for batch in loader(data, model.tokenizer, batch_size, pin_memory=device.type == "cuda"):
        labels.append(batch.pop("labels"))
        batch = _to(batch, device)
        with autocast(device, bf16):
            logits = with_offsets(model(**batch).float(), offsets)
        preds.append(logits.squeeze(-1) if logits.shape[-1] == 1 else logits.argmax(-1))
    return torch.cat(labels).numpy(), torch.cat(preds).cpu().numpy()  # one read back, not one per batch


def evaluate(model: Classifier, data: datasets.Dataset, task: Task, batch_size: int = 64,
             device: torch.device | None = None, logit_offsets: Sequence[float] | None = None) -> dict[str, float]:
    """The task's official metrics on `data` (predictions with `logit_offsets` added, if any)."""
    labels, preds = predictions(model, data, batch_size, device, logit_offsets)
    return glue_metrics.compute(task.metrics, labels, preds)


def dev_metrics(model, task: Task, tokenizer, pooling: str, max_length: int, data_dir, max_samples: int | None,
                batch_size: int, device, logit_offsets: tuple[float, ...] | None = None) -> tuple[dict[str, float], int]:
    """Official metrics on every dev split (MNLI: matched, then `mismatched_`-prefixed)."""
    metrics, count = {}, 0
    for i, split in enumerate(task.dev_splits):
        dev = subset(load_tokenized(task, split, tokenizer, pooling, max_length, data_dir), max_samples, seed=None)
        prefix = "" if i == 0 else f"{split.removeprefix('dev_')}_"
        metrics.update({prefix + k: v for k, v in evaluate(model, dev, task, batch_size, device, logit_offsets).items()})
        count += len(dev)
    return metrics, count
