"""The per-task artifact: one safetensors file holding z, the head and what they mean."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fedrp import projection
from fedrp.adapters import TRAINABLE, AdapterConfig, AdapterModel, build_model, config_from_dict
from fedrp.backbone import Backbone, load_backbone
from fedrp.files import atomic_path

if TYPE_CHECKING:
    from fedrp.tasks import Task

# /2 adds tensors_sha256: the fingerprint covers the projection spec, the digest what was trained. The optional
# task_definition (the task without its data) came later under /2: a reader that predates it ignores the key.
FORMAT = "fedrp-adapter/2"
REQUIRED = ("format", "method", "config", "spec", "fingerprint", "backbone", "backbone_config_hash",
            "tensors_sha256")
KINDS = ("classification", "regression")
DEFINITION_KEYS = ("name", "kind", "labels", "text", "pair", "label", "metrics")


@dataclasses.dataclass
class Artifact:
    """z and the head of one task, with the spec and backbone they only make sense with."""

    tensors: dict[str, torch.Tensor]
    config: dict
    spec: projection.ProjectionSpec
    fingerprint: str
    backbone: str
    backbone_config_hash: str
    task: str | None = None
    label_names: list[str] = dataclasses.field(default_factory=list)
    metric: dict = dataclasses.field(default_factory=dict)
    task_definition: dict | None = None  # the task without its data paths (task_definition()); None: not recorded

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def params(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    def metadata(self) -> dict:
        return {
            "format": FORMAT, "method": self.method, "config": self.config, "spec": self.spec.to_dict(),
            "fingerprint": self.fingerprint, "backbone": self.backbone,
            "backbone_config_hash": self.backbone_config_hash, "pooling": self.config["pooling"],
            "task": self.task, "label_names": self.label_names, "metric": self.metric,
            "tensors_sha256": tensors_digest(self.tensors),
            **({"task_definition": self.task_definition} if self.task_definition is not None else {}),
        }


def task_definition(task: Task) -> dict:
    """What an adapter records of its task: name, kind, labels, columns and metrics, never where the data is.
    A GLUE task's columns are named as on the Hub (sentence, question1, premise...): its files number some."""
    user = task.data is not None
    return {"name": task.name, "kind": KINDS[task.is_regression], "labels": list(task.label_names),
            "text": task.text if user else task.hub_text, "pair": task.pair if user else task.hub_pair,
            "label": task.label if user else "label", "metrics": list(task.metrics)}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def from_model(model: AdapterModel, task: str | Task | None = None, label_names: list[str] | None = None,
               metric: dict | None = None) -> Artifact:
    """The model's trained vectors with their metadata; a Task (not just its name) is recorded with its
    definition, and its label names are the artifact's."""
    definition = None if task is None or isinstance(task, str) else task_definition(task)
    if definition is not None:
        task, label_names = definition["name"], definition["labels"]
    return Artifact(
        tensors=model.state_vectors(), config=model.config.to_dict(), spec=model.spec,
        fingerprint=model.fingerprint, backbone=model.backbone_name,
        backbone_config_hash=model.backbone_config_hash, task=task,
        label_names=list(label_names or []), metric=dict(metric or {}), task_definition=definition,
    )


def save(artifact: Artifact, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write atomically: a crash mid-write never leaves a torn file where a good one was. Non-finite
    weights are refused (load would refuse them anyway); overwrite=False never replaces an existing file."""
    path = Path(path)
    bad = [k for k, t in sorted(artifact.tensors.items()) if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"refusing to write {path}: non-finite values in {bad} (training diverged); expected "
                         "finite weights")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists: pass --overwrite to replace it, or write elsewhere")
    with atomic_path(path, mode=0o644, replace=overwrite) as tmp:  # an adapter is meant to be shared
        save_file(artifact.tensors, tmp, metadata={"fedrp": json.dumps(artifact.metadata(), sort_keys=True)})
    return path


def load(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read an artifact; with verify, regenerate the projections and check the fingerprint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no adapter file at {path}: expected a .safetensors file written by fedrp")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("fedrp")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without fedrp metadata: expected an adapter written by fedrp")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has unreadable fedrp metadata ({err}): expected an adapter written by fedrp") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} has format {found!r}; this fedrp reads {FORMAT!r} (train or export it again)")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{path}'s fedrp metadata lacks {missing}: expected an adapter written by fedrp")
    if set(tensors) != set(TRAINABLE):
        raise ValueError(f"{path} holds tensors {sorted(tensors)}; expected exactly {list(TRAINABLE)}")
    if tensors_digest(tensors) != meta["tensors_sha256"]:
        raise ValueError(f"{path}: its tensors do not match the digest fedrp stored with them; the file was changed "
                         "after it was written")
    bad = [k for k, t in sorted(tensors.items()) if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{path} holds non-finite values in {bad}; expected finite weights")
    spec = projection.ProjectionSpec.from_dict(meta["spec"])
    if verify:
        projection.check_fingerprint(spec, meta["fingerprint"])
    _check_labels(path, meta, _check_config(path, meta, tensors, spec).num_labels)
    return Artifact(
        tensors=tensors, config=meta["config"], spec=spec, fingerprint=meta["fingerprint"],
        backbone=meta["backbone"], backbone_config_hash=meta["backbone_config_hash"], task=meta.get("task"),
        label_names=meta.get("label_names", []), metric=meta.get("metric", {}),
        task_definition=meta.get("task_definition"),
    )


def _check_config(path: Path, meta: dict, tensors: dict[str, torch.Tensor],
                  spec: projection.ProjectionSpec) -> AdapterConfig:
    """The config a model is built from: every key fedrp writes, agreeing with the spec and the tensors
    (checked here, before a backbone loads, rather than found as a mismatch once it has)."""
    raw = meta["config"]
    if not isinstance(raw, dict) or "method" not in raw:
        raise ValueError(f"{path}'s fedrp metadata has no adapter config naming its method: expected an adapter "
                         "written by fedrp")
    try:
        config = config_from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} has an unusable adapter config ({err}): expected an adapter written by fedrp") from None
    missing = sorted(set(config.to_dict()) - set(raw))
    if missing:
        raise ValueError(f"{path}'s adapter config lacks {missing}: expected an adapter written by fedrp")
    if meta["method"] != config.method:
        raise ValueError(f"{path} names method {meta['method']!r} but holds a {config.method!r} config")
    built = {"d": config.d, "seed": config.seed, "distribution": config.distribution, "position": config.position,
             "mode": config.projection_mode}
    held = {k: getattr(spec, k) for k in built}
    if built != held:
        raise ValueError(f"{path}'s adapter config gives the projection {built}, its spec holds {held}")
    shapes = (tuple(tensors["z"].shape), tuple(tensors["head.bias"].shape), tensors["head.weight"].shape[:1])
    if shapes != ((config.d,), (config.num_labels,), (config.num_labels,)):
        found = {k: list(t.shape) for k, t in sorted(tensors.items())}
        raise ValueError(f"{path} holds tensors of shapes {found}; its config (d {config.d}, {config.num_labels} "
                         f"labels) needs z of {config.d} and a head of {config.num_labels} rows")
    return config


def _check_labels(path: Path, meta: dict, num_labels: int) -> None:
    """The optional task, label names and metric, where present, are what fedrp writes."""
    labels, task, metric = meta.get("label_names", []), meta.get("task"), meta.get("metric", {})
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{path}'s label_names {labels!r} are not a list of names")
    if labels and len(labels) != num_labels:
        raise ValueError(f"{path} names {len(labels)} labels for a head of {num_labels} outputs")
    if not (task is None or isinstance(task, str)) or not isinstance(metric, dict):
        raise ValueError(f"{path}'s task {task!r} or metric {metric!r} is not what fedrp writes (a name, a mapping)")
    if "task_definition" in meta:
        _check_definition(path, meta["task_definition"], meta, num_labels)


def _check_definition(path: Path, definition, meta: dict, num_labels: int) -> None:
    """A recorded task definition has every key fedrp writes, and agrees with the task name, labels and head."""
    if not isinstance(definition, dict) or sorted(definition) != sorted(DEFINITION_KEYS):
        found = sorted(definition) if isinstance(definition, dict) else type(definition).__name__
        raise ValueError(f"{path}'s task_definition holds {found}; expected the keys {list(DEFINITION_KEYS)}")
    names = [definition[k] for k in ("name", "text", "label")]
    lists = [definition[k] for k in ("labels", "metrics")]
    if (not all(isinstance(n, str) and n for n in names) or not isinstance(definition["pair"], (str, type(None)))
            or not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists)
            or definition["kind"] not in KINDS):
        raise ValueError(f"{path}'s task_definition {definition} is not what fedrp writes: names of columns, "
                         f"lists of label and metric names, a kind of {list(KINDS)}")
    outputs = 1 if definition["kind"] == "regression" else len(definition["labels"])
    if definition["name"] != meta.get("task") or definition["labels"] != meta.get("label_names", []) \
            or outputs != num_labels:
        raise ValueError(f"{path}'s task_definition (task {definition['name']!r}, {definition['kind']}, labels "
                         f"{definition['labels']}) disagrees with its task {meta.get('task')!r}, label_names "
                         f"{meta.get('label_names', [])} or head of {num_labels} outputs")


def check_compatible(artifact: Artifact, model: AdapterModel) -> None:
    """Refuse to put an artifact on a model with another backbone, method or projection."""
    if artifact.backbone_config_hash != model.backbone_config_hash:
        raise ValueError(
            f"adapter was trained on backbone {artifact.backbone!r} (config hash {artifact.backbone_config_hash[:12]}), "
            f"not on {model.backbone_name!r} (config hash {model.backbone_config_hash[:12]})"
        )
    if artifact.method != model.config.method:
        raise ValueError(f"adapter is for method {artifact.method!r}, the model is {model.config.method!r}")
    if artifact.spec.canonical_json() != model.spec.canonical_json():  # stored and streamed hold one projection
        raise ValueError(
            f"adapter projection spec {artifact.spec.canonical_json()} differs from the model's {model.spec.canonical_json()}"
        )
    if artifact.fingerprint != model.fingerprint:
        raise ValueError(
            f"projection fingerprint mismatch: adapter has {artifact.fingerprint}, model builds {model.fingerprint}"
        )


def apply(artifact: Artifact, model: AdapterModel) -> AdapterModel:
    check_compatible(artifact, model)
    model.load_state_vectors(artifact.tensors)
    return model


def load_model(path: str | os.PathLike, backbone: Backbone | None = None, model_name: str | None = None) -> tuple[AdapterModel, Artifact]:
    """Backbone + adapter ready for inference; the backbone defaults to the one the artifact names."""
    artifact = load(path)
    backbone = backbone or load_backbone(model_name or artifact.backbone)
    model = build_model(backbone, config_from_dict(artifact.config))
    return apply(artifact, model), artifact
