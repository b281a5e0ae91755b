"""What decides the model a run builds, written once: each model option's default, allowed values and help.

ModelOptions holds the options; the centralized and the federated configs inherit them, the
command line's options are generated from them, and ModelSpec (the options plus the task's
number of labels) is what `fedrp.methods.build` takes and what model caches key on. Adding a
model option is one field here. TrainOptions adds a centralized run's options (`fedrp train`)
the same way. Nothing here imports torch: the allowed values are read from
the modules that implement them only when a value is checked or one command's help is shown.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence


class Vocabulary(Sequence):
    """The allowed values of an option, as the module that implements them defines them (a tuple or a
    registry's keys), imported on first use so that `fedrp --help` and config parsing stay light."""

    def __init__(self, module: str, name: str, render: Callable[[object], list] = list) -> None:
        self.module, self.name, self.render = module, name, render

    @property
    def _items(self) -> list:  # read on every use: a method registered later (fedrp.methods) is listed too
        return self.render(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __str__(self) -> str:
        return ", ".join(map(str, self._items))


MAX_LENGTH = 128  # tokens per example, where a run or a call names no other length
BF16_MODES = ("auto", "on", "off")
FROZEN_HEADS = ("none", "etf")  # a head that trains, or a fixed simplex equiangular tight frame (fedrp.classifier)  # bf16 autocast: auto (where the device has it natively), always, never


def option(default, help: str, choices: Sequence | None = None, minimum: float | None = None,
           positive: bool = False, method: str | None = None) -> dataclasses.Field:
    """A config field with its help text and what it accepts, for argparse and the checks below (`positive`: a
    number above 0, for the command line's parser; `method`: the one method that reads it, named in its help)."""
    if method:
        help = f"{help} ({method} only)"
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                                        "positive": positive, "method": method})


def check_fields(config, fields: Sequence[dataclasses.Field]) -> None:
    """Refuse a value outside a field's choices or below its minimum, or a method's own option set for another
    method (it would be ignored), naming the option as a user types it."""
    for f in fields:
        value, name = getattr(config, f.name), f.name.replace("_", "-")
        owner = f.metadata.get("method")
        if owner and value != f.default and getattr(config, "method", owner) != owner:
            raise ValueError(f"{name} is an option of method {owner}; method {config.method} would ignore it")
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        if minimum is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
            raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """The options that decide the model, shared by every way to train one."""

    method: str = option("slash", "what trains", Vocabulary("fedrp.methods", "METHODS"))
    model: str = option("", "transformers model name or path (empty: the packaged all-MiniLM-L6-v2)")
    d: int = option(1024, "dimension of z (slash, jrwarp)", minimum=1)
    seed: int = option(0, "projection seed, the same on every device (slash, jrwarp: part of the fingerprint); "
                          "also the baselines' head initialisation")
    pooling: str = option("mask", "what the head reads: a mask token after the first sentence, CLS, or the mean",
                          Vocabulary("fedrp.inputs", "POOLINGS"))
    position: str = option("output", "where SLaSh's shift enters each block",
                           Vocabulary("fedrp.methods.slash", "SLASH_POSITIONS"), method="slash")
    distribution: str = option("gaussian", "entries of the projections W_l",
                               Vocabulary("fedrp.projection", "DISTRIBUTIONS"))
    projection_mode: str = option("stored", "how the W_l are held: stored (d x H floats per block), streamed (the "
                                            "same W_l rebuilt in row blocks on every use: little memory, more time) "
                                            "or srht (a structured projection with its own fingerprint)",
                                  Vocabulary("fedrp.projection", "MODES"))
    lora_rank: int = option(8, "rank of LoRA's updates", minimum=1, method="lora")
    frozen_head: str = option("none", "none: the head trains; etf: a fixed simplex equiangular tight frame (as "
                                      "FedETF's; drawn from --seed), so that only z or the method's weights train",
                              FROZEN_HEADS)

    def __post_init__(self) -> None:
        check_fields(self, dataclasses.fields(ModelOptions))

    def model_spec(self, num_labels: int) -> ModelSpec:
        """These options for a task with this many outputs (1 for regression)."""
        return ModelSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelOptions)},
                         num_labels=num_labels)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainOptions(ModelOptions):
    """The options of a centralized run (`fedrp train`), after the model's: the command line is generated from
    these fields, so each default and help is stated here once."""

    task: str
    data_dir: str | None = option(None, "local GLUE folder in the official layout (default: $FEDRP_GLUE_DIR, else "
                                        "the hub's nyu-mll/glue)")
    data_seed: int = option(0, "the training subset, the initial head and LoRA weights and the shuffles (the "
                               "projections follow --seed)", minimum=0)
    epochs: float = option(1.0, "passes over the training examples", positive=True)
    lr: float | None = option(None, "learning rate (default per method: %(rates)s)", positive=True)
    batch_size: int = option(32, "examples per micro-batch", minimum=1)
    grad_accum: int = option(1, "micro-batches per optimizer step", minimum=1)
    schedule: str = option("linear", "the rate after warmup", ("linear", "constant"))
    warmup_ratio: float = option(0.06, "the share of the steps the rate warms up over")
    max_train_samples: int | None = option(None, "a seeded random subset (--data-seed), the same for every method",
                                           minimum=1)
    max_eval_samples: int | None = option(None, "the first N dev examples", minimum=1)
    validation_samples: int = option(0, "hold out N training examples (the ones simulations hold out) and report "
                                        "metrics on them instead of dev: for choosing settings")
    max_length: int = option(MAX_LENGTH, "tokens per example, longer ones truncated")
    bf16: str = option("auto", "bf16 autocast (auto: on CUDA and on CPUs with native bf16)", BF16_MODES)
    device: str = option("auto", "auto (cuda, mps, cpu in that order), or a torch device")
    out: str | None = option("runs", "folder for the adapter file (slash, jrwarp): <out>/<task>-<method>.safetensors")
    overwrite: bool = option(False, "replace an adapter an earlier run wrote to the same file")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec(ModelOptions):
    """Everything that decides a model's trainable shapes and values: hashable, so caches key on it."""

    num_labels: int = option(2, "outputs of the head (1 for regression)", minimum=1)

    def __post_init__(self) -> None:
        check_fields(self, dataclasses.fields(self))
