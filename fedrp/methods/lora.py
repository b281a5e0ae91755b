"""LoRA (PEFT): low-rank updates of the attention projections train, with the head."""

from __future__ import annotations

import peft
from torch import nn

from fedrp.backbone import Backbone, family_of
from fedrp.baselines import BaselineModel
from fedrp.methods import register_method
from fedrp.rates import Rates
from fedrp.spec import ModelSpec
from fedrp.train import seeded


class LoRAModel(BaselineModel):
    method = "lora"
    rates = Rates(centralized=1e-2, federated=3e-3)  # the federated rate: docs/guide/results.md
    private_rule = "opacus"  # Opacus's per-sample rules for LoRA's Linear layers

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, spec: ModelSpec) -> nn.Module:
        rank = spec.lora_rank
        model = backbone.model.requires_grad_(False)
        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                 target_modules=list(family_of(model).lora_targets))
        with seeded(spec.seed):  # PEFT draws LoRA's A from torch's global generator
            return peft.get_peft_model(model, config)

    def reseed(self, seed: int) -> None:
        """The head, and LoRA's A (B stays zero, so the start is still the backbone), drawn from the seed."""
        super().reseed(seed)
        if seed == 0:
            return
        with seeded(seed):  # PEFT draws A from torch's global generator, as when it built the layers
            for module in self.backbone.modules():
                if isinstance(module, peft.tuners.lora.LoraLayer):
                    for adapter in module.lora_A:
                        module.reset_lora_parameters(adapter, init_lora_weights=True)


register_method(LoRAModel)
