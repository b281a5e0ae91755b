"""JR-WARP: one prompt token, z W_0 at block 0, shifted by z W_l at every later block."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from fedrp.adapters.base import AdapterModel
from fedrp.adapters.config import AdapterConfig
from fedrp.backbone import blocks, hidden_size
from fedrp.classifier import Classifier
from fedrp.methods import register_method
from fedrp.rates import Rates

PROMPT_FILE = "fedrp_prompt.safetensors"  # an export's prompt vectors, (layers, H)


@dataclasses.dataclass
class JRWarpConfig(AdapterConfig):
    method = "jrwarp"
    # federated: chosen on 1,000 held-out SST-2 training examples (simulations.harness.tune, alpha 1.0, 2,000 examples,
    # 20 rounds, batches of 8; docs/results/tuning.jsonl): 3e-2 scored 0.805 against 0.802 (1e-1), 0.796 (1e-2),
    # 0.746 (3e-3, the previous default) and 0.723 (1e-3).
    rates: ClassVar[Rates] = Rates(centralized=1e-2, federated=3e-2)
    prompt_tokens: ClassVar[int] = 1  # with_prompt_slot's placeholder

    @property
    def position(self) -> str:
        return "prompt"


def with_prompt_slot(inputs: dict[str, torch.Tensor], slot_id: int) -> dict[str, torch.Tensor]:
    """Prepend one attended placeholder token; its hidden state is overwritten at block 0."""
    out = {}
    for key, value in inputs.items():
        fill = {"input_ids": slot_id, "attention_mask": 1}.get(key, 0)
        out[key] = torch.cat([torch.full_like(value[:, :1], fill), value], dim=1)
    return out


class PromptLayer:
    """At a block's input, set (block 0) or shift (later blocks) the prompt token's hidden state."""

    def __init__(self, block: nn.Module, vector: Callable[[], torch.Tensor], replace: bool) -> None:
        self.vector = vector
        self.replace = replace
        self.handle = block.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict):
        def token(hidden: torch.Tensor) -> torch.Tensor:
            v = self.vector().to(hidden.dtype).expand(hidden.shape[0], 1, hidden.shape[-1])
            return v if self.replace else hidden[:, :1] + v

        return on_prompt_token(args, kwargs, token)

    def remove(self) -> None:
        self.handle.remove()


def on_prompt_token(args: tuple, kwargs: dict, token: Callable[[torch.Tensor], torch.Tensor]) -> tuple[tuple, dict]:
    """A block's inputs with the prompt token's hidden state replaced by token(hidden states), whether the
    block takes them positionally or as a keyword (a forward pre-hook's return value)."""
    hidden = args[0] if args else kwargs["hidden_states"]
    hidden = torch.cat([token(hidden), hidden[:, 1:]], dim=1)
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def attach_prompt(model: nn.Module, vector: Callable[[int], torch.Tensor]) -> list[PromptLayer]:
    """Prompt hooks on every block; `vector(l)` gives block l's contribution."""
    return [PromptLayer(block, lambda i=i: vector(i), replace=(i == 0)) for i, block in enumerate(blocks(model))]


def prompted_hidden_states(model: nn.Module, inputs: dict[str, torch.Tensor], slot_id: int) -> torch.Tensor:
    """Run a backbone carrying prompt hooks; return the real tokens' states, prompt dropped."""
    return model(**with_prompt_slot(inputs, slot_id)).last_hidden_state[:, 1:]


def slot_id(tokenizer) -> int:
    # The pad id: RoBERTa-style position ids then skip the slot, so real tokens keep their positions.
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class JRWarpModel(AdapterModel):
    config_class = JRWarpConfig

    def layer_widths(self) -> tuple[int, ...]:
        return (hidden_size(self.backbone),) * len(blocks(self.backbone))

    @classmethod
    def attach_vectors(cls, backbone: nn.Module, config: JRWarpConfig,
                       vector: Callable[[int], torch.Tensor]) -> list[PromptLayer]:
        return attach_prompt(backbone, vector)

    @classmethod
    def served_hidden_states(cls, backbone: nn.Module, tokenizer, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return prompted_hidden_states(backbone, inputs, slot_id(tokenizer))

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.served_hidden_states(self.backbone, self.tokenizer, inputs)

    def add_at_entries(self, extra: Callable[[torch.Tensor], torch.Tensor]) -> list:
        """At each block's input, once the prompt hook has set or shifted it: the prompt token + extra(hidden)."""
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            return on_prompt_token(args, kwargs, lambda hidden: hidden[:, :1] + extra(hidden))

        return [block.register_forward_pre_hook(hook, with_kwargs=True) for block in blocks(self.backbone)]

    @torch.no_grad()
    def prepare_export(self, out: Path) -> dict:
        """The prompt vectors go to their own file, which the export's loader hooks back in."""
        save_file({"prompt": self.vectors().float().contiguous()}, out / PROMPT_FILE)
        self.detach_layers()
        return {"prompt": True}

    @classmethod
    def load_exported(cls, backbone: nn.Module, tokenizer, head: nn.Linear, pooling: str,
                      read_tensors: Callable[[str], dict[str, torch.Tensor]]) -> Classifier:
        tensors = read_tensors(PROMPT_FILE)
        if "prompt" not in tensors:
            raise ValueError(f"the export's {PROMPT_FILE} holds no 'prompt' tensor: export the adapter again")
        return ExportedPrompt(backbone, tokenizer, head, pooling, tensors["prompt"])


class ExportedPrompt(Classifier):
    """A JR-WARP export for inference: the plain backbone with the stored prompt vectors hooked back in."""

    def __init__(self, backbone: nn.Module, tokenizer, head: nn.Linear, pooling: str, prompt: torch.Tensor) -> None:
        super().__init__(backbone, tokenizer, head, pooling)
        self.register_buffer("prompt", prompt)
        self._layers = attach_prompt(self.backbone, lambda i: self.prompt[i])

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return prompted_hidden_states(self.backbone, inputs, slot_id(self.tokenizer))


register_method(JRWarpModel)
