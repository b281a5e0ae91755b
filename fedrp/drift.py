"""Terms a federated objective adds to a client's local gradients, against client drift under label skew.

Each is a gradient added after the data gradient is clipped, before the optimizer's step:
- a fixed linear term `linear`: SCAFFOLD's c - c_i (Karimireddy et al. 2020), FedDyn's -g_i (Acar et al.
  2021), which the server holds per client and sends with the round;
- a proximal term `proximal` * (w - w_global): FedProx's mu (Li et al. 2020), FedDyn's alpha.
With `record`, the client also keeps the mean of the (clipped) data gradients over its steps: SCAFFOLD's new
control variate c_i (its option II, which for plain SGD equals (x - y_i) / (K lr) - c + c_i).
Flower's strategies leave the client's side of these rules to the app; this is it.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Correction:
    """What one client's round adds to its gradients, by trainable parameter name."""

    linear: dict[str, torch.Tensor] | None = None
    proximal: float = 0.0
    anchor: dict[str, torch.Tensor] | None = None  # the round's global weights, for the proximal term
    record: bool = False
    _sums: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict, repr=False)
    _steps: int = dataclasses.field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.proximal < 0:
            raise ValueError(f"the proximal weight must be 0 or positive, got {self.proximal}")
        if self.proximal and self.anchor is None:
            raise ValueError("a proximal term needs the round's global weights (anchor)")

    @property
    def active(self) -> bool:
        return self.linear is not None or bool(self.proximal) or self.record

    @torch.no_grad()
    def apply(self, params: dict[str, torch.nn.Parameter]) -> None:
        """Record the data gradients (if asked), then add the linear and proximal terms to them."""
        if self.record:
            for name, p in params.items():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                self._sums[name] = self._sums.get(name, 0) + grad.detach().double()
            self._steps += 1
        for name, p in params.items():
            extra = 0
            if self.linear is not None:
                extra = extra + self.linear[name].to(p.device, p.dtype)
            if self.proximal:
                extra = extra + self.proximal * (p.detach() - self.anchor[name].to(p.device, p.dtype))
            if isinstance(extra, torch.Tensor):
                p.grad = extra if p.grad is None else p.grad + extra

    def mean_gradient(self) -> dict[str, torch.Tensor]:
        """The mean recorded data gradient per parameter, fp32 on the CPU (SCAFFOLD's new c_i)."""
        if not self.record or not self._steps:
            raise ValueError("no gradients were recorded: the correction was made without record, or no step ran")
        return {name: (total / self._steps).float().cpu() for name, total in self._sums.items()}
