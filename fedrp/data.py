"""Tokenized GLUE splits, cached per (task, split, backbone tokenizer), and batches padded per batch."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader

from fedrp import glue, inputs
from fedrp.cache import cache_root
from fedrp.files import atomic_path
from fedrp.spec import MAX_LENGTH

ENCODING_VERSION = "1"  # bump when fedrp.inputs.encode changes what it produces
def _tokenizer_id(tokenizer) -> str:
    return f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"


def _cache_key(task: glue.Task, split: str, data_dir, tokenizer, pooling: str, max_length: int) -> str:
    parts = [ENCODING_VERSION, glue.source_id(task, split, data_dir), _tokenizer_id(tokenizer), pooling, str(max_length)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def tokenize(ds: datasets.Dataset, tokenizer, pooling: str, max_length: int) -> datasets.Dataset:
    def fn(batch):
        return inputs.encode(tokenizer, batch["text"], batch.get("pair"), pooling, max_length)

    return ds.map(fn, batched=True, batch_size=2000, remove_columns=[c for c in ds.column_names if c != "label"],
                  desc="tokenizing")


def load_tokenized(task: str | glue.Task, split: str, tokenizer, pooling: str = "mask", max_length: int = MAX_LENGTH,
                   data_dir: str | os.PathLike | None = None) -> datasets.Dataset:
    """A split with input_ids, attention_mask, (token_type_ids,) label: tokenized once, then read from disk."""
    task = glue.get_task(task) if isinstance(task, str) else task
    split = task.dev_splits[0] if split == "dev" else split
    path = cache_root() / "tokens" / f"{task.name}-{split}-{_cache_key(task, split, data_dir, tokenizer, pooling, max_length)}"
    return _load_or_build(str(path), task, split, str(data_dir) if data_dir else None, tokenizer, pooling, max_length)


@lru_cache(maxsize=16)
def _load_or_build(path: str, task: glue.Task, split: str, data_dir: str | None, tokenizer, pooling: str,
                   max_length: int):
    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    ds = tokenize(glue.load_split(task, split, data_dir), tokenizer, pooling, max_length)
    try:
        with atomic_path(path, folder=True, replace=False) as tmp:
            ds.save_to_disk(str(tmp))
    except FileExistsError:  # another process cached it first: keep theirs
        pass
    return datasets.load_from_disk(path)


VALIDATION_SEED = 20261128  # the held-out validation examples do not move with the run seed


def validation_split(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, rest) indices of a training set: a fixed seeded choice, so every run tunes on the same examples."""
    if not 0 < size < n:
        raise ValueError(f"validation-samples must be between 1 and {n - 1} for {n} training examples, got {size}")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    return np.sort(order[:size]), np.sort(order[size:])


def label_counts(labels, num_labels: int) -> list[int]:
    """How many examples of each class (logit offsets, the released DP counts, the federation's prior)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_labels)[:num_labels].tolist()


def subset(ds: datasets.Dataset, n: int | None, seed: int | None = 0) -> datasets.Dataset:
    """At most n examples: a seeded random subset (seed None: the first n)."""
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"the number of samples must be positive, got {n}")
    if seed is None:
        return ds.select(range(n))
    return ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


def collate(tokenizer, rows: dict[str, list]) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest example; labels become long (classes) or float (scores)."""
    labels = rows.pop("label")
    batch = inputs.collate(tokenizer, rows)
    dtype = torch.float32 if isinstance(labels[0], float) else torch.long
    batch["labels"] = torch.tensor(labels, dtype=dtype)
    return batch


def loader(ds: datasets.Dataset, tokenizer, batch_size: int, shuffle: bool = False, seed: int = 0,
           pin_memory: bool = False) -> DataLoader:
    """Batches of whole examples fetched column-wise from the arrow table (in page-locked memory
    with pin_memory, so that copies to a GPU run beside its work)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(range(len(ds)), batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=lambda idx: collate(tokenizer, ds[list(idx)]), pin_memory=pin_memory)
