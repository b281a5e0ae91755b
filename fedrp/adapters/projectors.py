"""How z meets W_l in torch, one class per projection mode: z W_l forward, g W_l^T back (for DP).

Every class has `count`, `project(layer, z)` (z: (..., d) -> (..., H_l)), `project_back(layer, g)`
(g: (..., H_l) -> (..., d)) and `matrix(layer)` (the dense W_l, for tests and inspection only).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from fedrp import projection
from fedrp.projection import ProjectionSpec


def _shared(m: np.ndarray) -> torch.Tensor:
    """A CPU tensor over projection.generate's cached, read-only array: one copy of W_l per process, not two.

    Nothing writes a projection buffer (it never trains, and .to(device or dtype) makes a new
    tensor), so torch's warning about a non-writable array does not apply here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(m)


class Projections(nn.Module):
    """Stored: the fixed W_l as non-persistent buffers: they follow .to(device) but are never saved."""

    def __init__(self, mats: tuple) -> None:
        super().__init__()
        for i, m in enumerate(mats):
            self.register_buffer(f"w{i}", _shared(m), persistent=False)
        self.count = len(mats)

    def __getitem__(self, layer: int) -> torch.Tensor:
        return getattr(self, f"w{layer}")

    def project(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        return z @ self[layer]

    def project_back(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        return g @ self[layer].to(g.dtype).T

    def matrix(self, layer: int) -> torch.Tensor:
        return self[layer]


def _blocks(spec: ProjectionSpec, layer: int, like: torch.Tensor):
    """W_l's row blocks as tensors of z's dtype on z's device, one at a time."""
    for r0, block in projection.row_chunks(spec, layer):
        yield r0, torch.from_numpy(block).to(device=like.device, dtype=like.dtype)


def streamed_project(spec: ProjectionSpec, layer: int, z: torch.Tensor) -> torch.Tensor:
    """z W_l = sum over row blocks of z[rows] W_l[rows]: the sum runs in another order than one matmul."""
    out = z.new_zeros(*z.shape[:-1], spec.widths[layer])
    for r0, w in _blocks(spec, layer, z):
        out += z[..., r0:r0 + w.shape[0]] @ w
    return out


def streamed_project_back(spec: ProjectionSpec, layer: int, g: torch.Tensor) -> torch.Tensor:
    """g W_l^T one block of d's coordinates at a time: each is a whole sum over H."""
    out = g.new_empty(*g.shape[:-1], spec.d)
    for r0, w in _blocks(spec, layer, g):
        out[..., r0:r0 + w.shape[0]] = g @ w.T
    return out


class _StreamedProduct(torch.autograd.Function):
    """z W_l with W_l regenerated in the backward pass too: nothing of size d x H is saved."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, spec: ProjectionSpec, layer: int) -> torch.Tensor:
        ctx.spec, ctx.layer = spec, layer
        return streamed_project(spec, layer, z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return streamed_project_back(ctx.spec, ctx.layer, grad), None, None


class StreamedProjections(nn.Module):
    """Streamed: the stored W_l, rebuilt in blocks of rows on every use; memory O(block x H)."""

    def __init__(self, spec: ProjectionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.count = spec.num_layers

    def project(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        return _StreamedProduct.apply(z, self.spec, layer)

    def project_back(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        return streamed_project_back(self.spec, layer, g)

    def matrix(self, layer: int) -> torch.Tensor:
        return torch.from_numpy(projection.layer_projection(self.spec, layer))


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of the last axis (a power of two): x Hadamard_N, O(N log N).

    Written by hand: of what is installed, scipy.linalg.hadamard only builds the dense N x N
    matrix (the memory this avoids), and the fast-transform packages (fast-hadamard-transform is
    CUDA-only, fht/ffht are numpy or C without autograd) would be a compiled dependency for ten
    lines. The SRHT around it must also take its signs and columns from this project's Philox
    bits, so every device builds the same projection: no library SRHT is seeded that way.
    """
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        pairs = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, n)
        h *= 2
    return x


class SRHTProjections(nn.Module):
    """SRHT: z W_l = (pad_N(z * D_l) Hadamard_N)[columns_l] / sqrt(d); memory O(N) per block.

    D_l (signs) and columns_l come from projection.srht_parameters; both are non-persistent
    buffers, so they follow .to(device) (signs also .double()) and are never saved.
    """

    def __init__(self, spec: ProjectionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.count = spec.num_layers
        self.scale = float(projection._scale(spec.d))
        self.sizes = [projection.srht_size(spec.d, w) for w in spec.widths]
        for i in range(spec.num_layers):
            bits, columns = projection.srht_parameters(spec, i)
            signs = 1.0 - 2.0 * torch.from_numpy(bits.astype("float32"))
            self.register_buffer(f"signs{i}", signs, persistent=False)
            self.register_buffer(f"columns{i}", torch.from_numpy(columns.copy()), persistent=False)

    def _params(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"signs{layer}"), getattr(self, f"columns{layer}")

    def project(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        signs, columns = self._params(layer)
        x = nn.functional.pad(z * signs.to(z.dtype), (0, self.sizes[layer] - self.spec.d))
        return fwht(x).index_select(-1, columns) * self.scale

    def project_back(self, layer: int, g: torch.Tensor) -> torch.Tensor:
        """g W_l^T: scatter g into the selected columns, transform (Hadamard is symmetric), sign, crop."""
        signs, columns = self._params(layer)
        x = g.new_zeros(*g.shape[:-1], self.sizes[layer]).index_copy(-1, columns, g)
        return fwht(x)[..., :self.spec.d] * signs.to(g.dtype) * self.scale

    def matrix(self, layer: int) -> torch.Tensor:
        return self.project(layer, torch.eye(self.spec.d, dtype=self._params(layer)[0].dtype))


def make_projections(spec: ProjectionSpec) -> nn.Module:
    """The module that applies this spec's W_l in its mode."""
    if spec.mode == "stored":
        return Projections(projection.generate(spec))
    if spec.mode == "streamed":
        return StreamedProjections(spec)
    return SRHTProjections(spec)
