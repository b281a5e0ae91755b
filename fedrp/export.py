"""Export: a plain transformers folder plus a small head, with no W_l needed at inference.

Each method says what its export holds (`prepare_export`) and how it loads back (`load_exported`):
SLaSh's shifts fold into the biases of the Linear layers they follow, so the exported backbone has
the original architecture and latency; JR-WARP stores its per-layer prompt vectors z W_l.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from fedrp import artifact as artifacts
from fedrp import methods
from fedrp.backbone import check_positions, freeze
from fedrp.classifier import Classifier
from fedrp.files import atomic_path

HEAD_FILE = "fedrp_head.safetensors"
INFO_FILE = "fedrp_head.json"
T = TypeVar("T")
INFO_KEYS = ("method", "pooling", "label_names")  # what loading an export reads from INFO_FILE


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
        **({"task_definition": art.task_definition} if art.task_definition is not None else {}),
    }
    model.backbone.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    _name_labels(out, art.label_names, model.config.num_labels)
    save_file(head, out / HEAD_FILE)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _name_labels(out: Path, label_names: list[str], num_labels: int) -> None:
    """The label names in the exported config.json (id2label, label2id), as transformers' pipelines read them;
    a single output is marked as a regression score."""
    config = AutoConfig.from_pretrained(out, local_files_only=True)
    names = label_names if len(label_names) == num_labels else [f"LABEL_{i}" for i in range(num_labels)]
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    if num_labels == 1:
        config.problem_type = "regression"
    config.save_pretrained(out)


def _make_readable(folder: Path) -> None:
    # mkdtemp and some writers create owner-only files; an export is meant to be shared.
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)


def read_info(path: Path) -> dict:
    """An export's fedrp_head.json, or one line saying why the folder is no readable export."""
    if not (path / INFO_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a fedrp export: expected {INFO_FILE} beside a transformers model")
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # a truncated file, or not UTF-8
        raise ValueError(f"{path / INFO_FILE} is unreadable ({_first_line(err)}): export the adapter again") from None
    missing = [k for k in INFO_KEYS if not isinstance(info, dict) or k not in info]
    if missing:
        raise ValueError(f"{path / INFO_FILE} lacks {missing}: export the adapter again")
    return info


def check_max_length(path: str | os.PathLike, max_length: int, option: str = "--max-length") -> None:
    """Refuse, from the export's config alone (no weights), a max length its backbone cannot embed."""
    path = Path(path)
    prompt = exported_method(path, read_info(path)).prompt_tokens
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}'s config.json is unreadable ({_first_line(err)}): export the adapter again") from None
    check_positions(max_length, config, prompt, option)


def exported_method(path: Path, info: dict) -> type[Classifier]:
    """The registered method an export names: it says how the export loads back."""
    try:
        return methods.get_method(info["method"])
    except ValueError as err:
        raise ValueError(f"{path / INFO_FILE}: {err}") from None


def _first_line(err: Exception) -> str:
    """What a one-line error shows of a library's (often multi-line) message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _read(path: Path, what: str, load: Callable[[], T]) -> T:
    """One part of an export; a truncated or foreign file is one line naming it, not a library's traceback."""
    try:
        return load()
    except (SafetensorError, OSError, ValueError, KeyError, IndexError, RuntimeError) as err:
        raise ValueError(f"{path}: {what} is unreadable ({type(err).__name__}: {_first_line(err)}): export the "
                         "adapter again") from None


def _head(tensors: dict[str, torch.Tensor]) -> nn.Linear:
    """The exported head as a Linear; a tensor of the wrong name or shape raises KeyError or RuntimeError."""
    head = nn.Linear(tensors["weight"].shape[1], tensors["weight"].shape[0])
    head.load_state_dict(tensors)
    return head


def load_exported(path: str | os.PathLike) -> Classifier:
    """An exported folder loaded for inference: the plain backbone, the head and pooling, and what the method
    stored beside them; `info` and `label_names` say what the export was trained for."""
    path = Path(path)
    info = read_info(path)
    method = exported_method(path, info)
    head = _read(path, HEAD_FILE, lambda: _head(load_file(path / HEAD_FILE)))
    backbone = _read(path, "its model (config.json, model.safetensors)",
                     lambda: freeze(AutoModel.from_pretrained(path, local_files_only=True)))
    tokenizer = _read(path, "its tokenizer files", lambda: AutoTokenizer.from_pretrained(path, local_files_only=True))
    model = method.load_exported(backbone, tokenizer, head.requires_grad_(False), info["pooling"],
                                 lambda name: _read(path, name, lambda: load_file(path / name)))
    model.info, model.label_names = info, info["label_names"]
    return model
