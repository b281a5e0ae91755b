"""BitFit: only the backbone's biases train, with the head."""

from __future__ import annotations

from torch import nn

from fedrp.backbone import Backbone
from fedrp.baselines import BaselineModel
from fedrp.methods import register_method
from fedrp.rates import Rates
from fedrp.spec import ModelSpec


class BitFitModel(BaselineModel):
    method = "bitfit"
    rates = Rates(centralized=3e-3, federated=1e-3)  # the federated rate is unmeasured
    # No DP-SGD: Opacus's hooks did not record the LayerNorm biases' per-sample gradients here.

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, spec: ModelSpec) -> nn.Module:
        model = backbone.model.requires_grad_(False)
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".bias"))
        return model


register_method(BitFitModel)
