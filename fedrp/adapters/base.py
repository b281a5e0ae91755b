"""The model wrapper every method shares: frozen backbone, one trainable z, a linear head."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from fedrp import projection
from fedrp.adapters.config import AdapterConfig
from fedrp.backbone import Backbone, accepted_inputs
from fedrp.inputs import classify

TRAINABLE = ("z", "head.weight", "head.bias")


class Projections(nn.Module):
    """The fixed W_l as non-persistent buffers: they follow .to(device) but are never saved."""

    def __init__(self, mats: tuple) -> None:
        super().__init__()
        for i, m in enumerate(mats):
            self.register_buffer(f"w{i}", torch.from_numpy(m.copy()), persistent=False)
        self.count = len(mats)

    def __getitem__(self, layer: int) -> torch.Tensor:
        return getattr(self, f"w{layer}")


class AdapterModel(nn.Module):
    """Base of SLaSh and JR-WARP: subclasses say where the vectors z W_l enter the backbone."""

    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, backbone: Backbone, config: AdapterConfig) -> None:
        super().__init__()
        if getattr(backbone.model, "_fedrp_adapter", False):
            raise ValueError("this backbone already carries an adapter: load a fresh backbone or call detach_layers() first")
        self.config = config
        self.backbone = backbone.model
        self.tokenizer = backbone.tokenizer
        self.backbone_name = backbone.name
        self.backbone_config_hash = backbone.config_hash
        self.spec = projection.ProjectionSpec(
            seed=config.seed, d=config.d, distribution=config.distribution,
            position=config.position, widths=self.layer_widths(),
        )
        self.fingerprint = projection.fingerprint(self.spec)
        self.projections = Projections(projection.generate(self.spec))
        hidden = backbone.hidden_size
        self.z = nn.Parameter(torch.from_numpy(projection.initial_z(self.spec).copy()))
        self.head = nn.Linear(hidden, config.num_labels)
        std = getattr(self.backbone.config, "initializer_range", 0.02)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(projection.initial_head(self.spec, config.num_labels, hidden, std)))
            self.head.bias.zero_()
        self._accepts = accepted_inputs(self.backbone)
        self._layers = self.attach()
        self.backbone._fedrp_adapter = True

    # What a method defines.
    def layer_widths(self) -> tuple[int, ...]:
        raise NotImplementedError

    def attach(self) -> list:
        raise NotImplementedError

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(**inputs).last_hidden_state

    # Shared behaviour.
    def vector(self, layer: int) -> torch.Tensor:
        """z W_l: the shift (SLaSh) or prompt contribution (JR-WARP) of block `layer`."""
        return self.z @ self.projections[layer]

    def vectors(self) -> torch.Tensor:
        """All z W_l stacked, (layers, width): what export folds or stores."""
        return torch.stack([self.vector(i) for i in range(self.projections.count)])

    def backbone_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in batch.items() if k in self._accepts}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        hidden = self.hidden_states(self.backbone_inputs(batch))
        return classify(hidden, batch, self.head, self.pooling, self.tokenizer.mask_token_id)

    @property
    def pooling(self) -> str:
        return self.config.pooling

    def train(self, mode: bool = True) -> "AdapterModel":
        super().train(mode)
        self.backbone.eval()  # dropout stays off: the method trains without it
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def state_vectors(self) -> dict[str, torch.Tensor]:
        """What travels and what an artifact stores: z and the head, fp32 on the CPU."""
        params = dict(self.named_parameters())
        return {k: params[k].detach().float().cpu().contiguous() for k in TRAINABLE}

    def load_state_vectors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy z and the head in, refusing anything of the wrong names or shapes."""
        params = dict(self.named_parameters())
        if set(tensors) != set(TRAINABLE):
            raise ValueError(f"expected exactly the tensors {list(TRAINABLE)}, got {sorted(tensors)}")
        for name in TRAINABLE:
            if tuple(tensors[name].shape) != tuple(params[name].shape):
                raise ValueError(
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
