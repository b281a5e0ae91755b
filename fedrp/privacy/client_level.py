"""Client-level (user-level) DP on the server: DP-FedAvg with fixed clipping (McMahan et al. 2018).

Each accepted update is clipped to L2 norm C as a whole, the clipped updates are averaged with
equal weights (weighting by examples would let one large client exceed the sensitivity), and
Gaussian noise of standard deviation sigma * C / m is added for m sampled clients. Flower's
DifferentialPrivacyServerSideFixedClipping does the same, but it wraps a strategy from the
outside and would clip replies before fedrp's validation has refused the malformed ones.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from opacus.accountants import RDPAccountant


@dataclasses.dataclass(frozen=True)
class ClientLevelDP:
    noise_multiplier: float
    clip: float
    delta: float

    def __post_init__(self) -> None:
        finite = math.isfinite(self.noise_multiplier) and math.isfinite(self.clip)  # inf noise or clip: no update
        if not (finite and self.noise_multiplier > 0 and self.clip > 0 and 0 < self.delta < 1):
            raise ValueError(f"client-level DP needs finite client-dp-noise > 0, client-dp-clip > 0 and "
                             f"client-dp-delta in (0, 1); got {self.noise_multiplier}, {self.clip}, {self.delta}")


def clip_update(update: dict[str, np.ndarray], clip: float) -> dict[str, np.ndarray]:
    """The update scaled so that its L2 norm over all arrays is at most `clip`."""
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in update.values())))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return {k: (v * scale).astype(v.dtype) for k, v in update.items()}


def with_noise(mean: np.ndarray, dp: ClientLevelDP, num_sampled: int, rng: np.random.Generator) -> np.ndarray:
    """A mean of m clipped updates plus N(0, (sigma C / m)^2) on every coordinate."""
    return mean + rng.normal(0.0, dp.noise_multiplier * dp.clip / num_sampled, size=mean.shape)


def noisy_mean(sent: dict[str, np.ndarray], states: list[dict[str, np.ndarray]], dp: ClientLevelDP,
               num_sampled: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """sent + the noised mean of the clipped updates over the m sampled clients."""
    clipped = [clip_update({k: s[k] - sent[k] for k in sent}, dp.clip) for s in states]
    out = {}
    for k, base in sent.items():
        mean = np.sum([c[k] for c in clipped], axis=0, dtype=np.float64) / num_sampled
        out[k] = (base + with_noise(mean, dp, num_sampled, rng)).astype(base.dtype)
    return out


def epsilon_after(dp: ClientLevelDP, sample_rate: float, rounds: int) -> float:
    """Client-level epsilon after `rounds` rounds that each sample clients at `sample_rate`."""
    if rounds == 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(dp.noise_multiplier, sample_rate, rounds)]
    return float(accountant.get_epsilon(dp.delta))
