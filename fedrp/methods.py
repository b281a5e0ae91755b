"""Every trainable method by name, with the defaults a user gets when naming none."""

from __future__ import annotations

from fedrp.adapters import METHODS as ADAPTERS
from fedrp.adapters import build_model, get_method
from fedrp.backbone import Backbone, check_positions, load_config
from fedrp.baselines import BASELINES, DP_BASELINES, BaselineModel
from fedrp.classifier import Classifier
from fedrp.rates import Rates
from fedrp.spec import ModelSpec

METHODS = (*ADAPTERS, *BASELINES)

# Each method's rates (fedrp.rates.Rates), declared beside the method.
RATES: dict[str, Rates] = {**{name: model.config_class.rates for name, model in ADAPTERS.items()}, **BASELINES}


def federated_local(method: str, optimizer: str = "", private: bool = False) -> tuple[str, float | None]:
    """A method's local optimizer in a federation (given, or AdamW) and that optimizer's rate, with or
    without sample-level DP (None: unmeasured)."""
    rates = RATES[method]
    optimizer = optimizer or "adamw"
    if optimizer == "adamw":
        return optimizer, rates.federated_dp if private else rates.federated
    return optimizer, None if private else rates.federated_sgd


def check_private(method: str) -> None:
    """Refuse DP-SGD for a method it cannot train, by name, before a model loads."""
    if method not in (*ADAPTERS, *DP_BASELINES):
        raise ValueError(f"DP training supports {', '.join(ADAPTERS)} and the baselines {', '.join(DP_BASELINES)}; "
                         f"got {method!r}")


def prompt_tokens(method: str) -> int:
    """Tokens a method prepends to every input: a max length must leave the backbone positions for them."""
    return ADAPTERS[method].config_class.prompt_tokens if method in ADAPTERS else 0


def check_max_length(max_length: int, model: str | None, method: str, option: str = "--max-length") -> None:
    """Refuse, from the backbone's config alone, a max length its position embeddings cannot hold with this
    method's prompt tokens: checked before a model loads, not at the first long example."""
    check_positions(max_length, load_config(model), prompt_tokens(method), option)


def build(spec: ModelSpec, backbone: Backbone, data_seed: int = 0) -> Classifier:
    """The model a spec describes, on a loaded backbone; a data seed other than 0 draws its initial head (and
    LoRA's A) anew (Classifier.reseed)."""
    if spec.method in ADAPTERS:
        model = build_model(backbone, get_method(spec.method).config_class.from_spec(spec))
    else:
        model = BaselineModel(backbone, spec.method, spec.num_labels, spec.pooling, lora_rank=spec.lora_rank,
                              seed=spec.seed)
    model.reseed(data_seed)
    return model


def payload_bytes(model: Classifier, bytes_per_value: int = 4) -> int:
    """What one update of this method would send: every trainable value."""
    return model.num_trainable() * bytes_per_value
