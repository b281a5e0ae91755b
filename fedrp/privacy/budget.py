"""A federated client's privacy budget across rounds: its accountant's history lives in Flower's node state,
and in a node-local file that outlives the run, so a resumed run goes on spending the same budget."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from opacus.accountants import IAccountant

from fedrp.data import label_counts
from fedrp.files import write_text
from fedrp.privacy.accounting import make_accountant, noise_after, noise_for
from fedrp.privacy.config import PrivacyConfig
from fedrp.refusals import Refusal


class BudgetExhausted(Refusal):
    """Training this round would spend more than the client's epsilon."""


COUNT_RELEASE_RATE = 1.0  # the label counts are released once, from all the client's examples
STATE_ENV = "FEDRP_STATE_DIR"  # where a node keeps what must outlive a run (node config `state-dir` wins)


def budget_path(node_config: Mapping, node_id: int, lineage: str | None) -> Path | None:
    """The node-local copy of a client's accounting for a run and its resumptions (None: the run names no lineage)."""
    if not lineage:
        return None
    root = node_config.get("state-dir") or os.environ.get(STATE_ENV) or Path.home() / ".fedrp" / "state"
    who = node_config.get("partition-id", f"node-{node_id}")
    return Path(root) / f"dp-budget-{lineage}-{who}.json"


def node_budget(privacy: PrivacyConfig | None, kept: dict | None, path: Path | None) -> ClientBudget | None:
    """A client's accounting so far (None without DP): the copy its node state kept, else the file a resumed
    run left, else none spent."""
    if privacy is None:
        return None
    if kept is None and path is not None:
        return ClientBudget.load(privacy, path)
    return ClientBudget.from_lists(privacy, kept)


@dataclasses.dataclass
class ClientBudget:
    config: PrivacyConfig
    history: list[tuple[float, float, int]] = dataclasses.field(default_factory=list)  # (noise, sample rate, steps)
    counts: tuple[float, ...] | None = None  # the label counts as released with Gaussian noise (release_counts)

    def release_counts(self, labels, num_labels: int, noise: float) -> tuple[float, ...]:
        """Release this client's label counts once, through the Gaussian mechanism, and account for it.

        A histogram changes by 1 in one bin when one example is added or removed (L2 sensitivity 1),
        so adding N(0, noise^2) to each count is one step of the Gaussian mechanism at noise
        multiplier `noise` and sample rate 1, which the accountant composes with the DP-SGD steps.
        Everything computed from the released counts (logit offsets, per-class clipping norms) is
        post-processing. The noise comes from the OS, never from a seed a participant could know.
        """
        noisy = np.asarray(label_counts(labels, num_labels)) + np.random.default_rng().normal(0.0, noise, size=num_labels)
        self.history.append((float(noise), COUNT_RELEASE_RATE, 1))
        self.counts = tuple(float(x) for x in noisy)
        return self.counts

    def prior(self) -> list[tuple[float, float, int]]:
        """What the calibration of the DP-SGD steps must leave room for: the counts' release, if any."""
        return [h for h in self.history[:1] if self.counts is not None]

    def accountant(self) -> IAccountant:
        acc = make_accountant(self.config.accountant)
        acc.history = [tuple(h) for h in self.history]
        return acc

    def spent(self, delta: float) -> float:
        return float(self.accountant().get_epsilon(delta)) if self.history else 0.0

    def noise_for_rounds(self, delta: float, sample_rate: float, steps_per_round: int, rounds: int) -> float:
        """Noise that keeps epsilon when this client trains in `rounds` rounds, after the counts' release."""
        if self.counts is None:
            return noise_for(self.config, delta, sample_rate, steps_per_round * rounds)
        return noise_after(self.config, delta, self.prior(), sample_rate, steps_per_round * rounds)

    def check(self, delta: float, noise: float, sample_rate: float, steps: int) -> None:
        """Refuse a round whose steps would take the total past epsilon."""
        acc = self.accountant()
        acc.history.append((noise, sample_rate, steps))
        after = float(acc.get_epsilon(delta))
        if after > self.config.epsilon * (1 + 1e-6):
            raise BudgetExhausted(f"privacy budget exhausted: spent epsilon {self.spent(delta):.3f} of "
                                  f"{self.config.epsilon:g}, and this round would bring it to {after:.3f}")

    def to_lists(self) -> dict[str, list]:
        lists = {"noise": [h[0] for h in self.history], "rate": [h[1] for h in self.history],
                 "steps": [int(h[2]) for h in self.history]}
        return lists if self.counts is None else {**lists, "counts": list(self.counts)}

    def save(self, path: Path) -> None:
        """Write atomically: a crash mid-write must never leave a file that reads as less spent."""
        write_text(path, json.dumps(self.to_lists()))

    @classmethod
    def load(cls, config: PrivacyConfig, path: Path) -> ClientBudget:
        return cls.from_lists(config, json.loads(path.read_text()) if path.is_file() else None)

    @classmethod
    def from_lists(cls, config: PrivacyConfig, lists: dict | None) -> ClientBudget:
        if not lists:
            return cls(config)
        history = [(float(a), float(b), int(c)) for a, b, c in zip(lists["noise"], lists["rate"], lists["steps"])]
        counts = lists.get("counts")
        return cls(config, history, None if counts is None else tuple(float(x) for x in counts))
