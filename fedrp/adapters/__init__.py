"""What the projected adapters share (SLaSh and JR-WARP, in fedrp.methods): one trainable z whose fixed random
projections z W_l enter every block, a head, and the config that names the projection."""

from __future__ import annotations

from fedrp.adapters.base import TRAINABLE, AdapterModel
from fedrp.adapters.config import AdapterConfig
from fedrp.backbone import Backbone


def adapter_methods() -> list[str]:
    """The registered methods whose runs write an adapter file (fedrp.artifact: z, the head, the projection)."""
    from fedrp.methods import METHODS  # here, not above: the methods' modules import this package

    return [name for name, model in METHODS.items() if model.writes_artifact]


def get_adapter(name: str) -> type[AdapterModel]:
    from fedrp.methods import METHODS

    if name not in adapter_methods():
        raise ValueError(f"unknown adapter method {name!r}; expected one of {adapter_methods()}")
    return METHODS[name]


def make_config(method: str, **kwargs) -> AdapterConfig:
    return get_adapter(method).config_class(**kwargs)


def config_from_dict(data: dict) -> AdapterConfig:
    return get_adapter(data.get("method", "")).config_class.from_dict(data)


def build_model(backbone: Backbone, config: AdapterConfig) -> AdapterModel:
    return get_adapter(config.method)(backbone, config)


__all__ = ["TRAINABLE", "AdapterConfig", "AdapterModel", "adapter_methods", "build_model", "config_from_dict",
           "get_adapter", "make_config"]
