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
