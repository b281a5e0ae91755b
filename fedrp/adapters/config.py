"""Configuration shared by the jointly reparametrized adapters."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from fedrp.inputs import check_pooling
from fedrp.projection import DISTRIBUTIONS, MODES
from fedrp.rates import Rates
from fedrp.spec import ModelSpec


@dataclasses.dataclass
class AdapterConfig:
    """What defines an adapter besides its backbone: the projection and the head (defaults: fedrp.spec's)."""

    method: ClassVar[str] = ""
    rates: ClassVar[Rates]  # each method's defaults (fedrp.rates)
    prompt_tokens: ClassVar[int] = 0  # tokens the method prepends to every input (they take positions too)
    d: int = ModelSpec.d
    seed: int = ModelSpec.seed
    distribution: str = ModelSpec.distribution
    pooling: str = ModelSpec.pooling
    num_labels: int = ModelSpec.num_labels
    projection_mode: str = ModelSpec.projection_mode  # "stored", "streamed" (same W_l) or "srht" (another one)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> AdapterConfig:
        """This method's config for a model spec (a method with options of its own adds them)."""
        return cls(d=spec.d, seed=spec.seed, distribution=spec.distribution, pooling=spec.pooling,
                   num_labels=spec.num_labels, projection_mode=spec.projection_mode)

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"d must be a positive integer, got {self.d!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if not isinstance(self.num_labels, int) or self.num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer (1 for regression), got {self.num_labels!r}")
        if self.projection_mode not in MODES:
            raise ValueError(f"projection mode must be one of {MODES}, got {self.projection_mode!r}")
        check_pooling(self.pooling)

    @property
    def position(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        """As JSON data; projection_mode only when not "stored", so existing artifacts keep their metadata."""
        data = {"method": self.method, **dataclasses.asdict(self)}
        if self.projection_mode == "stored":
            del data["projection_mode"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AdapterConfig:
        data = {k: v for k, v in data.items() if k != "method"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.method} config keys {sorted(unknown)}; expected some of {sorted(names)}")
        return cls(**data)
