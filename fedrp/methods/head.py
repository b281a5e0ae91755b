"""Head only: the backbone is a frozen feature extractor and only the linear head trains."""

from __future__ import annotations

from torch import nn

from fedrp.backbone import Backbone
from fedrp.baselines import BaselineModel
from fedrp.methods import register_method
from fedrp.rates import Rates
from fedrp.spec import ModelSpec


class HeadModel(BaselineModel):
    method = "head"
    # Federated rate chosen on 1,000 held-out SST-2 training examples (`python -m simulations.harness.tune --method head
    # --set alpha=1.0 --set max-train-samples=2000 ...`, 20 rounds, batches of 8, docs/results/tuning.jsonl):
    # 3e-2 scored 0.758 against 0.752 (1e-1), 0.738 (1e-2) and 0.727 (3e-3).
    rates = Rates(centralized=3e-2, federated=3e-2)
    private_rule = "opacus"  # Opacus's per-sample rule for the head's Linear layer

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, spec: ModelSpec) -> nn.Module:
        return backbone.model.requires_grad_(False)

    def train(self, mode: bool = True) -> HeadModel:
        super().train(mode)
        self.backbone.eval()  # a frozen feature extractor: no dropout
        return self


register_method(HeadModel)
