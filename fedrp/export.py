"""Export: a plain transformers folder plus a small head, with no W_l needed at inference.

SLaSh shifts fold into the biases of the Linear layers they follow, so the exported backbone
has the original architecture and latency. JR-WARP stores its per-layer prompt vectors z W_l.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from fedrp import artifact as artifacts
from fedrp.adapters.jrwarp import PROMPT_FILE, attach_prompt, prompted_hidden_states, slot_id
from fedrp.backbone import freeze
from fedrp.classifier import Classifier
from fedrp.files import atomic_path

HEAD_FILE = "fedrp_head.safetensors"
INFO_FILE = "fedrp_head.json"


def export(adapter_path: str | os.PathLike, out_dir: str | os.PathLike, model_name: str | None = None) -> Path:
    """Write `out_dir` atomically; an existing folder is replaced only once the new one is complete."""
    out_dir = Path(out_dir)
    check_out(out_dir)  # before the backbone loads
    model, art = artifacts.load_model(adapter_path, model_name=model_name)
    with atomic_path(out_dir, folder=True) as tmp:
        _write(model, art, tmp)
        _make_readable(tmp)
        if out_dir.exists():
            check_out(out_dir)  # again: something may have been written there meanwhile
            shutil.rmtree(out_dir)
    return out_dir


def check_out(out_dir: Path) -> None:
    """An export goes to a new or empty folder, or replaces an earlier export; never over a file or other data."""
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir():
        raise FileExistsError(f"{existing} is a file: expected --out to be a new or empty folder, or an earlier export")
    if existing == out_dir and any(out_dir.iterdir()) and not (out_dir / INFO_FILE).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a fedrp export; choose an empty or new --out")


def _write(model, art: artifacts.Artifact, out: Path) -> None:
    head = {"weight": model.head.weight.detach().float().contiguous(), "bias": model.head.bias.detach().float().contiguous()}
    info = {
        "method": art.method, "pooling": model.pooling, "num_labels": model.config.num_labels,
        "label_names": art.label_names, "task": art.task, "backbone": art.backbone,
        "fingerprint": art.fingerprint, **model.prepare_export(out),  # the method's own part: folded or stored
    }
    model.backbone.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    save_file(head, out / HEAD_FILE)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _make_readable(folder: Path) -> None:
    # mkdtemp and some writers create owner-only files; an export is meant to be shared.
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)


class ExportedClassifier(Classifier):
    """An exported folder loaded for inference: plain backbone, head, pooling, optional prompt."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if not (path / INFO_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a fedrp export: expected {INFO_FILE} beside a transformers model")
        info = json.loads((path / INFO_FILE).read_text())
        head_tensors = load_file(path / HEAD_FILE)
        head = nn.Linear(head_tensors["weight"].shape[1], head_tensors["weight"].shape[0])
        head.load_state_dict(head_tensors)
        super().__init__(
            freeze(AutoModel.from_pretrained(path, local_files_only=True)),
            AutoTokenizer.from_pretrained(path, local_files_only=True),
            head.requires_grad_(False), info["pooling"],
        )
        self.info = info
        self.label_names = info["label_names"]
        if info["prompt"]:
            self.register_buffer("prompt", load_file(path / PROMPT_FILE)["prompt"])
            self._layers = attach_prompt(self.backbone, lambda i: self.prompt[i])

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.info["prompt"]:
            return prompted_hidden_states(self.backbone, inputs, slot_id(self.tokenizer))
        return super().hidden_states(inputs)
