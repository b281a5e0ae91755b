"""Turning text into model inputs, with the pooling token the head reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedrp.spec import MAX_LENGTH

POOLINGS = ("mask", "cls", "mean")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def _insert_mask_token(ids: list[int], types: list[int] | None, seq_ids: list[int | None], mask_id: int):
    """Put the mask token right after the last token of the first segment (paper default)."""
    first = [i for i, s in enumerate(seq_ids) if s == 0]
    at = (first[-1] + 1) if first else 1
    ids = ids[:at] + [mask_id] + ids[at:]
    if types is not None:
        types = types[:at] + [types[at - 1]] + types[at:]
    return ids, types


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    pooling: str = "mask",
    max_length: int = MAX_LENGTH,
) -> dict[str, list[list[int]]]:
    """Unpadded token ids per example; text can never produce special tokens itself."""
    check_pooling(pooling)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"expected one text pair per text, got {len(pairs)} pairs for {len(texts)} texts")
    reserve = 1 if pooling == "mask" else 0
    enc = tokenizer(
        list(texts), list(pairs) if pairs is not None else None,
        truncation=True, max_length=max_length - reserve, split_special_tokens=True,
    )
    out = {k: list(v) for k, v in enc.items() if k in ("input_ids", "token_type_ids", "attention_mask")}
    if pooling == "mask":
        mask_id = tokenizer.mask_token_id  # a property lookup through the vocabulary: once, not once a row
        if mask_id is None:
            raise ValueError("mask pooling needs a tokenizer with a mask token; use --pooling cls or mean")
        for i in range(len(texts)):
            types = out["token_type_ids"][i] if "token_type_ids" in out else None
            ids, types = _insert_mask_token(out["input_ids"][i], types, enc.sequence_ids(i), mask_id)
            out["input_ids"][i] = ids
            out["attention_mask"][i] = [1] * len(ids)
            if types is not None:
                out["token_type_ids"][i] = types
    return out


def collate(tokenizer: PreTrainedTokenizerBase, features: dict[str, list[list[int]]]) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest example (dynamic padding).

    The same tensors as `tokenizer.pad`, built with one numpy scatter per column instead of its
    per-example Python: the host's batching then keeps pace with an accelerator's steps.
    """
    lengths = np.fromiter(map(len, features["input_ids"]), dtype=np.int64, count=len(features["input_ids"]))
    filled = np.arange(lengths.max()) < lengths[:, None]
    if tokenizer.padding_side == "left":
        filled = filled[:, ::-1]
    pads = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id, "attention_mask": 0}
    batch = {}
    for key, seqs in features.items():
        column = np.full(filled.shape, pads[key], dtype=np.int64)
        column[filled] = np.concatenate(seqs)
        batch[key] = torch.from_numpy(column)
    return batch


def batch_inputs(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    pooling: str = "mask",
    max_length: int = MAX_LENGTH,
) -> dict[str, torch.Tensor]:
    return collate(tokenizer, encode(tokenizer, texts, pairs, pooling, max_length))


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor,
    pooling: str,
    mask_token_id: int | None,
) -> torch.Tensor:
    """The (batch, hidden) vector the head reads."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    is_mask = input_ids == mask_token_id
    if not bool(is_mask.any(dim=1).all()):
        raise ValueError("mask pooling expects every example to hold the mask token; encode inputs with fedrp.inputs.encode")
    index = is_mask.int().argmax(dim=1)  # first mask token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def classify(
    hidden: torch.Tensor,
    batch: dict[str, torch.Tensor],
    head: torch.nn.Linear,
    pooling: str,
    mask_token_id: int | None,
) -> torch.Tensor:
    """Pool the backbone's states and apply the head: logits of shape (batch, labels)."""
    pooled = pool(hidden, batch["attention_mask"], batch["input_ids"], pooling, mask_token_id)
    return head(pooled.to(head.weight.dtype))
