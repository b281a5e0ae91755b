"""DP-SGD for z and the head: Poisson batches, exact per-sample gradients, Opacus's optimizer and accountant."""

from __future__ import annotations

import math
import time

import datasets
import torch
from opacus.accountants import IAccountant
from opacus.optimizers import DPOptimizer

from fedrp.classifier import Classifier
from fedrp.privacy.accounting import make_accountant, noise_for, report
from fedrp.privacy.config import PrivacyConfig
from fedrp.privacy.grad_sample import per_sample_engine
from fedrp.privacy.sampling import poisson_loader
from fedrp.train import (
    TrainConfig,
    TrainResult,
    _to,
    autocast,
    loss_fn,
    make_optimizer,
    make_scheduler,
    seeded,
    select_device,
    store_frozen_in_bf16,
    use_bf16,
)


def poisson_schedule(num_examples: int, batch_size: int, epochs: float) -> tuple[float, int]:
    """(sample rate, steps) for `epochs` passes in expectation over Poisson batches of `batch_size` on average."""
    sample_rate = min(1.0, batch_size / num_examples)
    return sample_rate, max(1, math.ceil(epochs / sample_rate))


def clip_by_class(grads: dict[str, torch.Tensor], labels: torch.Tensor, weights: torch.Tensor,
                  max_grad_norm: float, z_share: float = 0.0) -> dict[str, torch.Tensor]:
    """Clip each example's whole gradient to weights[label] * max_grad_norm (weights at most 1).

    DP-SGD's own clipping to max_grad_norm then changes nothing, and one example still moves the
    sum by at most max_grad_norm, so the noise and the accounting are those of plain DP-SGD. What
    changes is the balance: once every gradient is clipped to the same norm, a class counts by its
    number of examples, whatever the loss did; smaller norms for a client's larger classes give
    every class the same weight, as the logit-adjusted loss does without DP.

    z_share > 0: z and the head are clipped apart, z to sqrt(z_share) of the example's norm and the
    head to sqrt(1 - z_share) (Opacus's per-layer clipping; the total is still within the norm).
    The head's gradient (the pooled features, norm about 11) would otherwise take nearly all of it.
    """
    limit = weights[labels] * max_grad_norm
    groups = [list(grads)] if not z_share else [["z"], [k for k in grads if k != "z"]]
    shares = [1.0] if not z_share else [z_share, 1.0 - z_share]
    out = {}
    for names, share in zip(groups, shares):
        norms = torch.sqrt(sum(grads[k].flatten(1).pow(2).sum(1) for k in names))
        scale = torch.clamp(limit.to(norms.dtype) * share ** 0.5 / (norms + 1e-6), max=1.0)
        out.update({k: grads[k] * scale.view(-1, *([1] * (grads[k].dim() - 1))).to(grads[k].dtype) for k in names})
    return out


def train_private(model: Classifier, data: datasets.Dataset, config: TrainConfig, privacy: PrivacyConfig,
                  device: torch.device | None = None, accountant: IAccountant | None = None,
                  weights: tuple[float, ...] | None = None, z_share: float = 0.0) -> TrainResult:
    """The shared loop's DP counterpart; each step's noise is calibrated to the budget (or fixed by `privacy`).

    `accountant` carries what earlier rounds spent; the report's epsilon is the total. `weights`: per-class
    clipping weights (fedrp.federation.local.class_weights), which must not depend on the data except through what was released.
    """
    if config.grad_accum != 1:
        raise ValueError("DP training takes one Poisson batch per step: set grad_accum to 1 and raise batch_size instead")
    device = device or select_device()
    model.to(device).train()
    n = len(data)
    delta = privacy.delta_for(n)
    sample_rate, steps = poisson_schedule(n, config.batch_size, config.epochs)
    sigma = noise_for(privacy, delta, sample_rate, steps)
    params = model.trainable_parameters()
    optimizer = DPOptimizer(make_optimizer(list(params.values()), config),  # config.optimizer, as without DP
                            noise_multiplier=sigma, max_grad_norm=privacy.max_grad_norm,
                            expected_batch_size=max(1, round(sample_rate * n)), loss_reduction="mean",
                            generator=torch.Generator(device).manual_seed(config.seed))
    scheduler = make_scheduler(optimizer.original_optimizer, config, steps)
    accountant = accountant if accountant is not None else make_accountant(privacy.accountant)
    bf16 = use_bf16(config.bf16, device)
    if bf16:
        store_frozen_in_bf16(model)
    offsets = None if config.logit_offsets is None else torch.tensor(config.logit_offsets, device=device)
    by_class = None if weights is None else torch.tensor(weights, device=device)

    def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return loss_fn(logits, labels, reduction="none")

    examples, last_loss, start = 0, float("nan"), time.perf_counter()
    with per_sample_engine(model) as per_sample, seeded(config.seed):
        for batch in poisson_loader(data, model.tokenizer, sample_rate, steps, config.seed):
            if batch is None:  # Poisson sampling can draw no example: the step is noise only
                grads = {k: torch.zeros((0, *p.shape), device=device, dtype=p.dtype) for k, p in params.items()}
            else:
                batch = _to(batch, device)
                labels = batch.pop("labels")
                with autocast(device, bf16):
                    grads, losses = per_sample(batch, labels, per_example_loss, offsets)
                grads = {k: g for k, g in grads.items() if k in params}  # a frozen head's gradients never count
                if not torch.isfinite(losses).all():
                    raise FloatingPointError(f"training loss became non-finite (lr {config.lr}); lower the learning rate")
                last_loss, examples = float(losses.mean()), examples + len(labels)
                if by_class is not None:
                    grads = clip_by_class(grads, labels, by_class, privacy.max_grad_norm, z_share)
            for k, p in params.items():
                p.grad_sample = grads[k].to(p.dtype)
            if config.correction is None:
                optimizer.step()
            elif optimizer.pre_step():  # clipped, summed, noised and scaled: p.grad is the private gradient
                # A federated rule's terms come from the server (earlier private outputs) and the weights; the
                # gradient a SCAFFOLD client records is this private one: all post-processing of DP-SGD.
                config.correction.apply(params)
                optimizer.original_optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainResult(steps=steps, examples=examples, seconds=time.perf_counter() - start, loss=last_loss,
                       privacy=report(accountant, privacy, delta, sigma, sample_rate))
