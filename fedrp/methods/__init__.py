"""Every trainable method by name (PEFT's way: a module per method, registered here), with the defaults a
user gets when naming none.

A method is a model class (fedrp.classifier.Classifier) that builds itself from a spec (`from_spec`), states
its rates (`rates`, fedrp.rates.Rates) and how DP-SGD gets its per-sample gradients (`private_rule`), and
registers under its name with `register_method`. Shared code asks the registry and the model, never a
method's name or type. Each method is one module of this package: SLaSh and JR-WARP on what the projected
adapters share (fedrp.adapters), the baselines on fedrp.baselines.
"""

from __future__ import annotations

from fedrp.backbone import Backbone, check_positions, load_config
from fedrp.classifier import Classifier
from fedrp.rates import Rates
from fedrp.spec import ModelSpec

METHODS: dict[str, type[Classifier]] = {}  # name -> the method's model class, in registration order
RATES: dict[str, Rates] = {}  # name -> its rates, declared beside the method


def register_method(model: type[Classifier], name: str | None = None) -> type[Classifier]:
    """Make a method known by name (default: the class's `method`); a name is registered once."""
    name = name or model.method
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered already (by {METHODS[name].__name__})")
    METHODS[name] = model
    RATES[name] = model.rates
    return model


def get_method(name: str) -> type[Classifier]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(METHODS)}")
    return METHODS[name]


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
    if method not in METHODS or METHODS[method].private_rule is None:
        supported = [name for name, model in METHODS.items() if model.private_rule is not None]
        raise ValueError(f"DP training supports {', '.join(supported)}; got {method!r}")


def prompt_tokens(method: str) -> int:
    """Tokens a method prepends to every input: a max length must leave the backbone positions for them."""
    return get_method(method).prompt_tokens


def check_max_length(max_length: int, model: str | None, method: str, option: str = "--max-length") -> None:
    """Refuse, from the backbone's config alone, a max length its position embeddings cannot hold with this
    method's prompt tokens: checked before a model loads, not at the first long example."""
    check_positions(max_length, load_config(model), prompt_tokens(method), option)


def build(spec: ModelSpec, backbone: Backbone, data_seed: int = 0) -> Classifier:
    """The model a spec describes, on a loaded backbone; a data seed other than 0 draws its initial head (and
    LoRA's A) anew (Classifier.reseed); a frozen head is drawn from the projection seed."""
    model = get_method(spec.method).from_spec(spec, backbone)
    model.reseed(data_seed)
    if spec.frozen_head == "etf":
        model.freeze_head(spec.seed)
        if not model.trainable_parameters():
            raise ValueError(f"frozen-head etf leaves method {spec.method} nothing to train")
    return model


def check_frozen_head(frozen_head: str, num_labels: int, z_share: float = 0.0) -> None:
    """Refuse, before a model loads, a frozen head where it cannot be: a regression task, or beside dp-z-share
    (which splits the clipping norm between z and a head that trains)."""
    if frozen_head == "none":
        return
    if num_labels < 2:
        raise ValueError("frozen-head etf needs a classification task; a regression head has one output")
    if z_share:
        raise ValueError("frozen-head etf leaves the head no share of the clipping norm: set dp-z-share 0")


def payload_bytes(model: Classifier, bytes_per_value: int = 4) -> int:
    """What one update of this method would send: every trainable value."""
    return model.num_trainable() * bytes_per_value


# Each method's module registers it; imported last, as they import register_method from here.
from fedrp.methods import slash, jrwarp, head, full, lora, bitfit  # noqa: F401, I001  (the CLI lists them so)
