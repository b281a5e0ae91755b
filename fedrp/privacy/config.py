"""What a user asks of sample-level DP-SGD: a budget, a clipping norm, an accountant."""

from __future__ import annotations

import dataclasses
import math

ACCOUNTANTS = ("rdp", "prv")


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    epsilon: float
    delta: float | None = None  # None: 1 / (2 n) for n training examples, as in the paper
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    noise_multiplier: float | None = None  # None: the smallest noise that keeps (epsilon, delta)

    def __post_init__(self) -> None:
        # Infinite noise or budget train to NaN or report a meaningless epsilon: both refused with the rest.
        for name in ("epsilon", "max_grad_norm", "noise_multiplier"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")

    def delta_for(self, num_examples: int) -> float:
        if num_examples < 1:
            raise ValueError(f"DP training needs at least one example, got {num_examples}")
        return self.delta if self.delta is not None else 1.0 / (2 * num_examples)
