"""Baselines trained in the same loop as SLaSh and JR-WARP: head only, full, LoRA, BitFit."""

from __future__ import annotations

import peft
import torch
from torch import nn

from fedrp.backbone import Backbone, family_of
from fedrp.classifier import Classifier
from fedrp.rates import Rates
from fedrp.train import seeded

# Each baseline and its rates. Federated rates of head and full were chosen on 1,000 held-out SST-2 training
# examples (`python -m simulations.tune --method M --set alpha=1.0 --set max-train-samples=2000 ...`, 20 rounds,
# batches of 8, docs/results/tuning.jsonl): head 3e-2 scored 0.758 against 0.752 (1e-1), 0.738 (1e-2) and
# 0.727 (3e-3); full 1e-4 0.869 against 0.848 (3e-4). LoRA's is in docs/guide/results.md; bitfit's is unmeasured.
BASELINES: dict[str, Rates] = {
    "head": Rates(centralized=3e-2, federated=3e-2),
    "full": Rates(centralized=3e-4, federated=1e-4),
    "lora": Rates(centralized=1e-2, federated=3e-3),
    "bitfit": Rates(centralized=3e-3, federated=1e-3),
}


# The baselines DP-SGD trains: Opacus has per-sample rules for their trainable Linear layers. BitFit's
# LayerNorm biases were not recorded by Opacus's hooks here, and full finetuning would hold B copies of
# 22M gradients.
DP_BASELINES = ("head", "lora")


class BaselineModel(Classifier):
    """The backbone with a chosen part of its own weights trainable, and the same pooled head."""

    def __init__(self, backbone: Backbone, method: str, num_labels: int, pooling: str = "mask",
                 lora_rank: int = 8, seed: int = 0) -> None:
        if method not in BASELINES:
            raise ValueError(f"unknown baseline {method!r}; expected one of {tuple(BASELINES)}")
        identity = (backbone.name, backbone.config_hash)  # taken before PEFT wraps the model
        model = backbone.model
        model.requires_grad_(method == "full")
        if method == "bitfit":
            for name, p in model.named_parameters():
                p.requires_grad_(name.endswith(".bias"))
        if method == "lora":
            if lora_rank < 1:
                raise ValueError(f"LoRA rank must be a positive integer, got {lora_rank}")
            config = peft.LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                     target_modules=list(family_of(model).lora_targets))
            with seeded(seed):  # PEFT draws LoRA's A from torch's global generator
                model = peft.get_peft_model(model, config)
        head = nn.Linear(backbone.hidden_size, num_labels)
        std = getattr(backbone.model.config, "initializer_range", 0.02)
        with torch.no_grad():
            head.weight.normal_(0.0, std, generator=torch.Generator().manual_seed(seed))
            head.bias.zero_()
        super().__init__(model, backbone.tokenizer, head, pooling)
        self.method = method
        self.backbone_name, self.backbone_config_hash = identity

    def reseed(self, seed: int) -> None:
        """The head, and LoRA's A (B stays zero, so the start is still the backbone), drawn from the seed."""
        super().reseed(seed)
        if seed == 0 or self.method != "lora":
            return
        with seeded(seed):  # PEFT draws A from torch's global generator, as when it built the layers
            for module in self.backbone.modules():
                if isinstance(module, peft.tuners.lora.LoraLayer):
                    for adapter in module.lora_A:
                        module.reset_lora_parameters(adapter, init_lora_weights=True)

    def private_gradients(self) -> str | None:
        return "opacus" if self.method in DP_BASELINES else None

    def train(self, mode: bool = True) -> BaselineModel:
        super().train(mode)
        if self.method == "head":
            self.backbone.eval()  # a frozen feature extractor: no dropout
        return self
