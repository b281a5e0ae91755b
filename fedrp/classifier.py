"""What every trainable or exported model here shares: backbone states, pooled, into a linear head."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from fedrp.backbone import accepted_inputs
from fedrp.inputs import check_pooling, classify
from fedrp.refusals import StateMismatch


class Classifier(nn.Module):
    """backbone -> hidden states -> pooling -> head; subclasses change how the states are computed."""

    # How DP-SGD gets a method's per-sample gradients (fedrp.privacy.grad_sample): "exact" (the method's own
    # rules), "opacus" (Opacus's rules for its trainable layers), or None (DP-SGD is not offered).
    private_rule: ClassVar[str | None] = None
    prompt_tokens: ClassVar[int] = 0  # tokens the method prepends to every input (they take positions too)
    writes_artifact: ClassVar[bool] = False  # whether a run saves its trained state as an adapter file (fedrp.artifact)

    def __init__(self, backbone: nn.Module, tokenizer, head: nn.Linear, pooling: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.head = head
        self.pooling = check_pooling(pooling)
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone  # PEFT wrappers
        self._accepts = accepted_inputs(base)

    @classmethod
    def load_exported(cls, backbone: nn.Module, tokenizer, head: nn.Linear, pooling: str,
                      read_tensors: Callable[[str], dict[str, torch.Tensor]]) -> Classifier:
        """An export of this method loaded for inference (fedrp.export); `read_tensors(name)` reads a file the
        method's `prepare_export` wrote beside the backbone. Here: the plain backbone, as exported."""
        return Classifier(backbone, tokenizer, head, pooling)

    def backbone_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k in self._accepts}

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(**inputs).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        hidden = self.hidden_states(self.backbone_inputs(batch))
        return classify(hidden, batch, self.head, self.pooling, self.tokenizer.mask_token_id)

    def reseed(self, seed: int) -> None:
        """Draw the initial trainable weights a data seed decides (the head, here) anew from it, so that
        replicates differ in their starting point as well as their data; seed 0 keeps the weights as built."""
        if seed == 0:
            return
        config = self.backbone.config
        with torch.no_grad():
            self.head.weight.normal_(0.0, getattr(config, "initializer_range", 0.02),
                                     generator=torch.Generator().manual_seed(seed))
            self.head.bias.zero_()

    @torch.no_grad()
    def freeze_head(self, seed: int) -> None:
        """Make the head a fixed simplex equiangular tight frame that never trains: C unit rows at equal angles
        (cosine -1/(C-1)), in C orthonormal directions drawn from the seed, and no bias (FedETF, Li et al. 2023;
        under label skew a trained head is what swings with each round's clients)."""
        classes, hidden = self.head.weight.shape
        if classes < 2:
            raise ValueError("frozen-head etf needs a classification task; a regression head has one output")
        directions, _ = torch.linalg.qr(torch.randn(hidden, classes, generator=torch.Generator().manual_seed(seed),
                                                    dtype=torch.float64))
        centred = torch.eye(classes, dtype=torch.float64) - 1.0 / classes
        frame = (classes / (classes - 1)) ** 0.5 * directions @ centred
        self.head.weight.copy_(frame.T.to(self.head.weight.dtype))
        self.head.bias.zero_()
        self.head.requires_grad_(False)

    def state_vectors(self) -> dict[str, torch.Tensor]:
        """What travels and what an artifact stores: the trainable tensors, fp32 on the CPU."""
        return {k: p.detach().float().cpu() for k, p in self.trainable_parameters().items()}

    def load_state_vectors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy the trainable tensors in; names and shapes must match exactly."""
        params = self.trainable_parameters()
        if set(tensors) != set(params):
            raise StateMismatch(f"payload holds {sorted(tensors)[:4]}..., the model trains {sorted(params)[:4]}...")
        with torch.no_grad():
            for name, p in params.items():
                if tuple(tensors[name].shape) != tuple(p.shape):
                    raise StateMismatch(f"payload array {name!r} has shape {tuple(tensors[name].shape)}, "
                                        f"expected {tuple(p.shape)}")
                p.copy_(tensors[name].to(p.dtype))

    def identity(self) -> dict[str, str]:
        """What a server sends so that a client can prove it runs the same model: here, the backbone."""
        return {"backbone": self.backbone_name, "backbone-hash": self.backbone_config_hash}

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())
