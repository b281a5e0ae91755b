"""The methods, PEFT style: each has a config and a model wrapper; the registry maps names to them."""

from __future__ import annotations

from fedrp.adapters.base import TRAINABLE, AdapterModel
from fedrp.adapters.config import AdapterConfig
from fedrp.adapters.jrwarp import JRWarpConfig, JRWarpModel
from fedrp.adapters.slash import SLaShConfig, SLaShModel
from fedrp.backbone import Backbone

METHODS: dict[str, type[AdapterModel]] = {"slash": SLaShModel, "jrwarp": JRWarpModel}


def get_method(name: str) -> type[AdapterModel]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def make_config(method: str, **kwargs) -> AdapterConfig:
    return get_method(method).config_class(**kwargs)


def config_from_dict(data: dict) -> AdapterConfig:
    return get_method(data.get("method", "")).config_class.from_dict(data)


def build_model(backbone: Backbone, config: AdapterConfig) -> AdapterModel:
    return get_method(config.method)(backbone, config)


__all__ = [
    "METHODS", "TRAINABLE", "AdapterConfig", "AdapterModel", "JRWarpConfig", "JRWarpModel",
    "SLaShConfig", "SLaShModel", "build_model", "config_from_dict", "get_method", "make_config",
]
