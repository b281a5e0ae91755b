"""A mean over seeds with its 95% Student-t interval, and the verdict a target gets from it.

Three seeds leave two degrees of freedom, so the interval is wide (t = 4.30): a verdict is "met"
or "not met" only when the whole interval lies on one side of the threshold, "undecided" when it
crosses it, and a single seed, which has no interval, decides nothing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from scipy import stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of n values and the half-width of its interval (None for one value)."""

    mean: float
    half: float | None
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half or 0.0)


def estimate(values: list[float]) -> Estimate:
    """The mean and, from two values on, the t interval's half-width (sample standard deviation / sqrt n)."""
    if not values:
        raise ValueError("no values to estimate from: expected at least one seed's result")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return Estimate(mean, None, 1)
    t = stats.t.ppf(0.5 + LEVEL / 2, n - 1)
    return Estimate(mean, float(t * statistics.stdev(values) / math.sqrt(n)), n)


def verdict(e: Estimate, threshold: float) -> str:
    """'met' (the interval at or above the threshold), 'not met' (below it), else 'undecided'."""
    if e.half is None:
        return "undecided (one seed)"
    if e.low >= threshold:
        return "met"
    if e.high < threshold:
        return "not met"
    return "undecided"


def describe(e: Estimate, fmt) -> str:
    """'95% interval [0.93x, 1.01x] over 3 seeds', or 'one seed': what follows the mean in a sentence."""
    if e.half is None:
        return "one seed"
    return f"{LEVEL:.0%} interval [{fmt(e.low)}, {fmt(e.high)}] over {e.n} seeds"
