"""The model wrapper every method shares: frozen backbone, one trainable z, a linear head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from fedrp import projection
from fedrp.adapters.config import AdapterConfig
from fedrp.adapters.projectors import Projections, make_projections
from fedrp.backbone import Backbone
from fedrp.classifier import Classifier
from fedrp.refusals import StateMismatch
from fedrp.spec import ModelSpec

TRAINABLE = ("z", "head.weight", "head.bias")
__all__ = ["TRAINABLE", "AdapterModel", "Projections"]


class AdapterModel(Classifier):
    """Base of SLaSh and JR-WARP: subclasses say where the vectors z W_l enter the backbone."""

    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    private_rule = "exact"  # z's and the head's per-sample gradients in closed form (fedrp.privacy.grad_sample)
    writes_artifact = True  # z, the head and the projection spec (fedrp.artifact)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.method = cls.config_class.method  # declared with the method's config, as are its rates
        cls.rates = cls.config_class.rates
        cls.prompt_tokens = cls.config_class.prompt_tokens

    @classmethod
    def from_spec(cls, spec: ModelSpec, backbone: Backbone) -> AdapterModel:
        return cls(backbone, cls.config_class.from_spec(spec))

    def __init__(self, backbone: Backbone, config: AdapterConfig) -> None:
        if getattr(backbone.model, "_fedrp_adapter", False):
            raise ValueError("this backbone already carries an adapter: load a fresh backbone or call detach_layers() first")
        super().__init__(backbone.model, backbone.tokenizer, nn.Linear(backbone.hidden_size, config.num_labels), config.pooling)
        self.config = config
        self.backbone_name = backbone.name
        self.backbone_config_hash = backbone.config_hash
        self.spec = projection.ProjectionSpec(
            seed=config.seed, d=config.d, distribution=config.distribution,
            position=config.position, widths=self.layer_widths(), mode=config.projection_mode,
        )
        self.fingerprint = projection.fingerprint(self.spec)
        self.projections = make_projections(self.spec)
        self.z = nn.Parameter(torch.from_numpy(projection.initial_z(self.spec).copy()))
        std = getattr(self.backbone.config, "initializer_range", 0.02)
        head = projection.initial_head(self.spec, config.num_labels, backbone.hidden_size, std)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(head))
            self.head.bias.zero_()
        self._layers = self.attach()
        self.backbone._fedrp_adapter = True

    # What a method defines.
    def layer_widths(self) -> tuple[int, ...]:
        raise NotImplementedError

    @classmethod
    def attach_vectors(cls, backbone: nn.Module, config: AdapterConfig, vector: Callable[[int], torch.Tensor]) -> list:
        """The method's removable hooks on a backbone, where `vector(l)` gives block l's vector: (width,) for one
        task, or (B, 1, width), each example its own task's (fedrp.serving: many tasks in one batch)."""
        raise NotImplementedError

    @classmethod
    def served_hidden_states(cls, backbone: nn.Module, tokenizer, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The real tokens' states of a backbone carrying this method's hooks (a method that adds tokens drops
        them here)."""
        return backbone(**inputs).last_hidden_state

    def attach(self) -> list:
        return self.attach_vectors(self.backbone, self.config, self.vector)

    def add_at_entries(self, extra: Callable[[torch.Tensor], torch.Tensor]) -> list:
        """Hooks that add extra(x), of shape (B, 1, width), where block l's vector enters the backbone
        (x: the tensor it enters, (B, n, width)); registered after the method's own hooks, removable.
        Differential privacy's exact per-sample rule (fedrp.privacy.grad_sample) reads its gradients there."""
        raise NotImplementedError

    def prepare_export(self, out: Path) -> dict:
        """Leave the backbone a plain transformers model that computes what this adapter did, writing into
        `out` what the backbone cannot hold; returns what the export's info file records of it."""
        raise NotImplementedError

    # Shared behaviour.
    def vector(self, layer: int) -> torch.Tensor:
        """z W_l: the shift (SLaSh) or prompt contribution (JR-WARP) of block `layer`."""
        return self.projections.project(layer, self.z)

    def project_back(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """g W_l^T for g (..., width): how a gradient of block l's vector reaches z (DP's per-sample rule)."""
        return self.projections.project_back(layer, g)

    def vectors(self) -> torch.Tensor:
        """All z W_l stacked, (layers, width): what export folds or stores."""
        return torch.stack([self.vector(i) for i in range(self.projections.count)])

    def train(self, mode: bool = True) -> AdapterModel:
        super().train(mode)
        self.backbone.eval()  # dropout stays off: the method trains without it
        return self

    def identity(self) -> dict[str, str]:
        """The backbone, and the spec and fingerprint of the projections a client must regenerate alike."""
        return {**super().identity(), "spec": self.spec.canonical_json(), "fingerprint": self.fingerprint}

    def state_vectors(self) -> dict[str, torch.Tensor]:
        """What travels and what an artifact stores: z and the head, fp32 on the CPU."""
        params = dict(self.named_parameters())
        return {k: params[k].detach().float().cpu().contiguous() for k in TRAINABLE}

    def load_state_vectors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy z and the head in, refusing anything of the wrong names or shapes."""
        params = dict(self.named_parameters())
        if set(tensors) != set(TRAINABLE):
            raise StateMismatch(f"expected exactly the tensors {list(TRAINABLE)}, got {sorted(tensors)}")
        for name in TRAINABLE:
            if tuple(tensors[name].shape) != tuple(params[name].shape):
                raise StateMismatch(
                    f"tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"this model expects {tuple(params[name].shape)}"
                )
        with torch.no_grad():
            for name in TRAINABLE:
                params[name].copy_(tensors[name].to(params[name].dtype))

    def detach_layers(self) -> None:
        """Remove the hooks: the backbone computes as if the adapter were never attached."""
        for layer in self._layers:
            layer.remove()
        self._layers = []
        self.backbone._fedrp_adapter = False
