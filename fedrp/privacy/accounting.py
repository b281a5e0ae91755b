"""Noise calibration and accounting, both Opacus's (RDP or PRV accountant)."""

from __future__ import annotations

from opacus.accountants import IAccountant, create_accountant
from opacus.accountants.utils import get_noise_multiplier

from fedrp.privacy.config import PrivacyConfig


def noise_for(config: PrivacyConfig, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier given, or the smallest that spends at most epsilon over `steps`."""
    if config.noise_multiplier is not None:
        return config.noise_multiplier
    return get_noise_multiplier(target_epsilon=config.epsilon, target_delta=delta, sample_rate=sample_rate,
                                steps=steps, accountant=config.accountant)


def noise_after(config: PrivacyConfig, delta: float, prior: list[tuple[float, float, int]], sample_rate: float,
                steps: int, tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier (within `tolerance`) for `steps` more steps at `sample_rate` that keeps the
    total, with what `prior` spent (accountant history entries), at most epsilon. Opacus's get_noise_multiplier
    calibrates from nothing spent; this bisects on the same accountant, composed with the prior."""
    if config.noise_multiplier is not None:
        return config.noise_multiplier

    def epsilon(sigma: float) -> float:
        acc = make_accountant(config.accountant)
        acc.history = [*prior, (sigma, sample_rate, steps)]
        return float(acc.get_epsilon(delta))

    low, high = 0.0, 1.0
    while epsilon(high) > config.epsilon:
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"no noise keeps epsilon {config.epsilon:g} after what was already spent")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (low, mid) if epsilon(mid) <= config.epsilon else (mid, high)
    return high


def make_accountant(name: str) -> IAccountant:
    return create_accountant(name)


def steps_taken(accountant: IAccountant) -> int:
    return sum(int(steps) for _, _, steps in accountant.history)


def report(accountant: IAccountant, config: PrivacyConfig, delta: float, noise_multiplier: float,
           sample_rate: float) -> dict:
    """The `privacy` object of a run's JSON: what was spent in all (every round so far) and how."""
    steps = steps_taken(accountant)
    return {"epsilon": float(accountant.get_epsilon(delta)) if steps else 0.0, "delta": delta,
            "noise_multiplier": noise_multiplier, "sample_rate": sample_rate, "steps": steps,
            "max_grad_norm": config.max_grad_norm, "accountant": config.accountant}
