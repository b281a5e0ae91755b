"""Poisson sampling of batches, which the accountants' guarantees assume (Opacus's sampler)."""

from __future__ import annotations

import datasets
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.utils.data import DataLoader

from fedrp.data import collate


def poisson_loader(ds: datasets.Dataset, tokenizer, sample_rate: float, steps: int, seed: int) -> DataLoader:
    """`steps` batches, each example in each batch with probability `sample_rate`; an empty batch is None."""
    sampler = UniformWithReplacementSampler(num_samples=len(ds), sample_rate=sample_rate,
                                            generator=torch.Generator().manual_seed(seed), steps=steps)
    return DataLoader(range(len(ds)), batch_sampler=sampler,
                      collate_fn=lambda idx: collate(tokenizer, ds[list(idx)]) if len(idx) else None)
