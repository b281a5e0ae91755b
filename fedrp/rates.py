"""A method's learning rates, declared beside the method (its config class, or its baseline entry)."""

from __future__ import annotations

import dataclasses

FEDERATED_BATCH_SIZE = 8  # a federation's local batches: 25 steps on a client's 200 examples
DP_BATCH_SIZE = 32  # under DP-SGD: fewer steps, each with less noise per example (docs/guide/privacy.md)


@dataclasses.dataclass(frozen=True)
class Rates:
    """Defaults when a user names no rate. Centralized rates are the best of a sweep on SST-2 (1,000
    training examples, one epoch, batch 32, MiniLM-L6: `python -m simulations.bench_glue --suite sweep`,
    docs/guide/method.md lists every point). Federated rates are below them: each round restarts the
    clients' AdamW, whose first steps move every weight by about the rate whatever its gradient, so a
    restarted head swings under label skew at the centralized rate."""

    centralized: float  # `fedrp train`
    federated: float  # a federation's clients: AdamW, local batches of FEDERATED_BATCH_SIZE
    federated_sgd: float | None = None  # with local-optimizer sgd (momentum 0.9); None: not measured, lr must be set
    # Under sample-level DP (dp-epsilon): local AdamW in batches of DP_BATCH_SIZE; None: not measured, lr must be set.
    federated_dp: float | None = None
