"""A federated client's privacy budget across rounds: its accountant's history lives in Flower's node state,
and in a node-local file that outlives the run, so a resumed run goes on spending the same budget."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from opacus.accountants import IAccountant

from fedrp.files import write_text
from fedrp.privacy.accounting import make_accountant, noise_for
from fedrp.privacy.config import PrivacyConfig
from fedrp.refusals import Refusal


class BudgetExhausted(Refusal):
    """Training this round would spend more than the client's epsilon."""


@dataclasses.dataclass
class ClientBudget:
    config: PrivacyConfig
    history: list[tuple[float, float, int]] = dataclasses.field(default_factory=list)  # (noise, sample rate, steps)

    def accountant(self) -> IAccountant:
        acc = make_accountant(self.config.accountant)
        acc.history = [tuple(h) for h in self.history]
        return acc

    def spent(self, delta: float) -> float:
        return float(self.accountant().get_epsilon(delta)) if self.history else 0.0

    def noise_for_rounds(self, delta: float, sample_rate: float, steps_per_round: int, rounds: int) -> float:
        """Noise that keeps epsilon even if this client trains in every one of `rounds` rounds."""
        return noise_for(self.config, delta, sample_rate, steps_per_round * rounds)

    def check(self, delta: float, noise: float, sample_rate: float, steps: int) -> None:
        """Refuse a round whose steps would take the total past epsilon."""
        acc = self.accountant()
        acc.history.append((noise, sample_rate, steps))
        after = float(acc.get_epsilon(delta))
        if after > self.config.epsilon * (1 + 1e-6):
            raise BudgetExhausted(f"privacy budget exhausted: spent epsilon {self.spent(delta):.3f} of "
                                  f"{self.config.epsilon:g}, and this round would bring it to {after:.3f}")

    def to_lists(self) -> dict[str, list]:
        return {"noise": [h[0] for h in self.history], "rate": [h[1] for h in self.history],
                "steps": [int(h[2]) for h in self.history]}

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
        return cls(config, [(float(a), float(b), int(c)) for a, b, c in zip(lists["noise"], lists["rate"], lists["steps"])])
