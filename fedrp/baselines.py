"""What the baselines share: the backbone with some of its own weights trainable, and the pooled head.

Each baseline is a subclass in its own module under fedrp/methods/ (head, full, lora, bitfit) that
says which weights train (`trainable_backbone`), its rates and whether DP-SGD can train it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from fedrp.backbone import Backbone
from fedrp.classifier import Classifier
from fedrp.rates import Rates
from fedrp.spec import ModelSpec


class BaselineModel(Classifier):
    """The backbone with a chosen part of its own weights trainable, and the same pooled head."""

    method: ClassVar[str]
    rates: ClassVar[Rates]

    def __init__(self, backbone: Backbone, spec: ModelSpec) -> None:
        identity = (backbone.name, backbone.config_hash)  # taken before a method (PEFT) wraps the model
        model = self.trainable_backbone(backbone, spec)
        head = nn.Linear(backbone.hidden_size, spec.num_labels)
        std = getattr(backbone.model.config, "initializer_range", 0.02)
        with torch.no_grad():
            head.weight.normal_(0.0, std, generator=torch.Generator().manual_seed(spec.seed))
            head.bias.zero_()
        super().__init__(model, backbone.tokenizer, head, spec.pooling)
        self.backbone_name, self.backbone_config_hash = identity

    @classmethod
    def from_spec(cls, spec: ModelSpec, backbone: Backbone) -> BaselineModel:
        return cls(backbone, spec)

    @classmethod
    def trainable_backbone(cls, backbone: Backbone, spec: ModelSpec) -> nn.Module:
        """The backbone module the classifier runs, with the method's weights set to train (a method reads its
        own options from the spec)."""
        raise NotImplementedError
