"""What a user asks of sample-level DP-SGD: a budget, a clipping norm, an accountant."""

from __future__ import annotations

import dataclasses

ACCOUNTANTS = ("rdp", "prv")


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    epsilon: float
    delta: float | None = None  # None: 1 / (2 n) for n training examples, as in the paper
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    noise_multiplier: float | None = None  # None: the smallest noise that keeps (epsilon, delta)

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {self.epsilon!r}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {self.accountant!r}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be positive, got {self.noise_multiplier!r}")

    def delta_for(self, num_examples: int) -> float:
        if num_examples < 1:
            raise ValueError(f"DP training needs at least one example, got {num_examples}")
        return self.delta if self.delta is not None else 1.0 / (2 * num_examples)
