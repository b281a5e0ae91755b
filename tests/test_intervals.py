"""Means over seeds and the verdicts a target gets: met or not met only when the interval lies on one side."""

import pytest

from simulations.harness.intervals import describe, estimate, verdict


def test_the_interval_is_students_t_over_the_seeds():
    e = estimate([1.0, 2.0, 3.0])  # mean 2, sample sd 1, t(0.975, 2 df) = 4.3027
    assert (e.mean, e.n) == (2.0, 3) and e.half == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-4)
    assert estimate([5.0, 7.0]).half == pytest.approx(12.706, abs=1e-3)  # t(0.975, 1 df) * sd 1.414 / sqrt 2
    one = estimate([0.7])
    assert (one.mean, one.half, one.low, one.high) == (0.7, None, 0.7, 0.7)
    with pytest.raises(ValueError, match="at least one seed"):
        estimate([])


def test_a_verdict_needs_the_whole_interval_on_one_side():
    assert verdict(estimate([0.97, 0.975, 0.98]), 0.95) == "met"  # [0.963, 0.987]
    assert verdict(estimate([0.92, 0.925, 0.93]), 0.95) == "not met"  # [0.913, 0.937]
    assert verdict(estimate([0.93, 0.99, 0.96]), 0.95) == "undecided"  # mean 0.96 above, interval [0.885, 1.035]
    assert verdict(estimate([0.90, 0.98, 0.96]), 0.95) == "undecided"  # mean 0.947 below, interval [0.843, 1.050]
    assert verdict(estimate([0.70]), 0.90) == "undecided (one seed)"  # one seed decides nothing
    assert describe(estimate([1.0, 2.0, 3.0]), lambda v: f"{v:.1f}") == "95% interval [-0.5, 4.5] over 3 seeds"
    assert describe(estimate([1.0]), str) == "one seed"
