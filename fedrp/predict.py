"""Label and logits for text, from an adapter or an exported folder alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedrp.inputs import batch_inputs


@torch.no_grad()
def predict(model: torch.nn.Module, label_names: Sequence[str], texts: Sequence[str],
            pairs: Sequence[str] | None = None, max_length: int = 128) -> list[dict]:
    """One {label, logits} per text; a single-output head is a regression score."""
    model.eval()
    batch = batch_inputs(model.tokenizer, texts, pairs, model.pooling, max_length)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).float().cpu()
    results = []
    for row in logits:
        if row.numel() == 1:
            label: str | float = float(row[0])
        else:
            index = int(row.argmax())
            label = label_names[index] if index < len(label_names) else str(index)
        results.append({"label": label, "logits": [float(x) for x in row]})
    return results
