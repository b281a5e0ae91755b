"""Exact per-sample gradients of z and the head, a rule registered per model type (as Opacus does per layer).

A shift s_l = z W_l is shared by every token and every block, so the per-sample gradient of z
is sum_l g_l W_l^T, where g_l (B x H) is the per-sample gradient of s_l summed over tokens;
AdapterModel.project_back applies W_l^T in whichever projection mode the model holds W_l.
The adapters' rule adds a zero "probe" of shape (B, 1, H) where block l's vector enters, which
each method says itself (AdapterModel.add_at_entries): autograd then yields g_l as the probe's
gradient, and nothing larger than B x H is kept per block. A generic
engine (Opacus hooks, functorch) would materialise per-sample gradients of whatever it hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from fedrp.adapters.base import AdapterModel
from fedrp.methods import check_private
from fedrp.train import with_offsets

ProbeRule = Callable[[AdapterModel, list], list]  # attaches probe hooks, returns their handles
GRAD_SAMPLERS: dict[type, ProbeRule] = {}


def register_grad_sampler(model_type: type) -> Callable[[ProbeRule], ProbeRule]:
    def wrap(rule: ProbeRule) -> ProbeRule:
        GRAD_SAMPLERS[model_type] = rule
        return rule

    return wrap


def _probe(like: torch.Tensor, probes: list) -> torch.Tensor:
    p = torch.zeros(like.shape[0], 1, like.shape[-1], dtype=like.dtype, device=like.device, requires_grad=True)
    probes.append(p)
    return p


@register_grad_sampler(AdapterModel)
def _adapter_probes(model: AdapterModel, probes: list) -> list:
    """A zero probe wherever the method says block l's vector enters (AdapterModel.add_at_entries)."""
    return model.add_at_entries(lambda like: _probe(like, probes))


def rule_for(model: nn.Module) -> ProbeRule:
    for model_type, rule in GRAD_SAMPLERS.items():
        if isinstance(model, model_type):
            return rule
    raise TypeError(f"no exact per-sample gradient rule for {type(model).__name__}; expected one of "
                    f"{[t.__name__ for t in GRAD_SAMPLERS]}")


@contextlib.contextmanager
def _probed(model: AdapterModel) -> Iterator[list]:
    probes: list = []
    handles = rule_for(model)(model, probes)
    try:
        yield probes
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def per_sample_engine(model: nn.Module) -> Iterator[Callable]:
    """A function (batch, labels, loss_fn, offsets) -> (per-sample gradients, losses) for this model.

    Adapters use the exact rules above; the head-only and LoRA baselines use Opacus's
    GradSampleModule (per-sample rules for their trainable Linear layers), whose hooks are
    removed on exit. BitFit (LayerNorm biases Opacus's hooks did not record here) and full
    finetuning (B copies of 22M gradients) are refused.
    """
    rule = model.private_rule
    if rule == "exact":
        yield lambda *args: per_sample_gradients(model, *args)
        return
    if rule != "opacus":
        check_private(getattr(model, "method", type(model).__name__))  # raises, naming what is supported
    from opacus import GradSampleModule

    wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    try:
        yield lambda *args: _opacus_gradients(wrapped, model, *args)
    finally:
        wrapped._close()


def _opacus_gradients(wrapped: nn.Module, model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                      loss_fn: Callable, logit_offsets: torch.Tensor | None = None):
    losses = loss_fn(with_offsets(wrapped(**batch), logit_offsets), labels)
    wrapped.zero_grad(set_to_none=True)
    losses.sum().backward()
    grads = {name: p.grad_sample for name, p in model.trainable_parameters().items()}
    return grads, losses.detach()


def per_sample_gradients(model: AdapterModel, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         logit_offsets: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({name: (B, *shape)} for z, head.weight and head.bias; the per-sample losses, (B,)).

    loss_fn(logits, labels) must return one loss per example (reduction "none").
    """
    pooled: list[torch.Tensor] = []
    capture = model.head.register_forward_pre_hook(lambda m, a: pooled.append(a[0]))
    try:
        with _probed(model) as probes:
            logits = model(**batch)
            losses = loss_fn(with_offsets(logits, logit_offsets), labels)
            grads = torch.autograd.grad(losses.sum(), [*probes, logits])
    finally:
        capture.remove()
    *probe_grads, d_logits = grads
    z_grad = sum(model.project_back(i, g.squeeze(1).to(model.z.dtype)) for i, g in enumerate(probe_grads))
    d_logits = d_logits.to(model.head.weight.dtype)
    x = pooled[0].to(model.head.weight.dtype)
    return {"z": z_grad, "head.weight": torch.einsum("bc,bh->bch", d_logits, x), "head.bias": d_logits}, losses.detach()
