"""What a client sends through SecAgg+ and how the server turns the unmasked sum into a state.

Flower's SecAgg+ (secaggplus_mod / SecAggPlusWorkflow) sums integer vectors: each client
scales its vector by its weight w / max_weight, clips every coordinate to
[-clipping_range, clipping_range], rounds it stochastically onto quantization_range levels and
masks it. The server learns only the weighted mean. fedrp sends the update (local state minus
the round's state), not the state, so the clipping range bounds how far one client can move
any coordinate, and the quantisation step applies to the small update, not to the weights.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedrp.privacy.client_level import ClientLevelDP, clip_update, with_noise


@dataclasses.dataclass(frozen=True)
class SecAggConfig:
    """The protocol's numeric ranges; every coordinate's step is 2 * clipping_range / quantization_range."""

    clipping_range: float = 8.0
    quantization_range: int = 2**22
    max_weight: float = 1000.0  # a client's weight (its example count) is capped here
    threshold: float = 2 / 3  # shares needed to unmask, as a fraction of the sampled clients

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clipping_range) and self.clipping_range > 0):  # inf: every step is inf
            raise ValueError(f"secagg-clip must be positive and finite, got {self.clipping_range}")
        if not 2 <= self.quantization_range <= 2**24:
            raise ValueError(f"secagg-quantization must be in [2, 2^24] (sums of up to 2^8 clients stay below the "
                             f"2^32 modulus), got {self.quantization_range}")
        if not (math.isfinite(self.max_weight) and self.max_weight >= 1):
            raise ValueError(f"secagg-max-weight must be a finite number of at least 1, got {self.max_weight}")
        if not 0.5 < self.threshold <= 1:
            raise ValueError(f"secagg-threshold must be in (0.5, 1] (at most half could collude), got {self.threshold}")

    def step(self, weight: float) -> float:
        """The quantisation step of one coordinate of an update sent with this weight."""
        return 2 * self.clipping_range / self.quantization_range * self.max_weight / weight


def client_update(sent: dict[str, np.ndarray], state: dict[str, np.ndarray], num_examples: int,
                  config: SecAggConfig, client_dp: ClientLevelDP | None) -> tuple[list[np.ndarray], float]:
    """The arrays (in sorted key order) and the weight a client hands to SecAgg+.

    With client-level DP the update is clipped here, on the device, because the server never
    sees it, and every client weighs the same (DP-FedAvg's sensitivity C / m).
    """
    update = {k: (state[k] - sent[k]).astype(np.float32) for k in sorted(sent)}
    bad = [k for k, v in update.items() if not np.all(np.isfinite(v))]
    if bad:  # a NaN would be cast to an arbitrary integer and spoil everyone's sum unseen
        raise ValueError(f"local update has non-finite values in {bad}; refusing to send it through SecAgg+")
    if client_dp is not None:
        return list(clip_update(update, client_dp.clip).values()), 1.0
    return list(update.values()), float(min(num_examples, config.max_weight))


def server_state(sent: dict[str, np.ndarray], mean_update: list[np.ndarray], survivors: int, num_sampled: int,
                 client_dp: ClientLevelDP | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The round's state plus the unmasked weighted mean update (DP-FedAvg's noised mean with client DP)."""
    keys = sorted(sent)
    if len(mean_update) != len(keys):
        raise ValueError(f"SecAgg+ returned {len(mean_update)} arrays, expected {len(keys)} ({keys})")
    out = {}
    for k, mean in zip(keys, mean_update, strict=True):
        mean = np.asarray(mean, dtype=np.float64).reshape(sent[k].shape)
        if client_dp is not None:  # equal weights: the sum over survivors, divided by the sampled count
            mean = with_noise(mean * survivors / num_sampled, client_dp, num_sampled, rng)
        out[k] = (sent[k] + mean).astype(sent[k].dtype)
    return out
