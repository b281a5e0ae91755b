"""Many trained task vectors on one backbone, answered together (issue 39: `fedrp serve` is built on this).

A task is an adapter file. When it loads, its per-block vectors z W_l are computed once (the
projections are not kept: the paper's point that a task then adds no latency) and stacked with the
other tasks' of the same kind, as is its head. A batch that mixes tasks of one kind runs once through
the shared backbone: the method's own hooks (`attach_vectors`) add each example's vectors, gathered
by its task, and each example's pooled state meets its own task's head. A kind is what one forward
pass can share: the method and where its vectors enter, and the pooling the inputs are built for.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from fedrp import artifact
from fedrp.adapters import AdapterModel, build_model, config_from_dict, get_adapter
from fedrp.backbone import Backbone, accepted_inputs
from fedrp.inputs import batch_inputs, pool
from fedrp.predict import answer
from fedrp.spec import MAX_LENGTH


@dataclasses.dataclass(frozen=True)
class Task:
    """One loaded adapter: where its vectors and head sit in its kind's stacks, and what its answers are named."""

    name: str
    digest: str  # the adapter's tensors_sha256: which trained state answers
    kind: tuple[str, str, str]  # (method, position, pooling)
    row: int
    label_names: tuple[str, ...]
    num_labels: int


class _Kind:
    """The stacked vectors (tasks, layers, width) and heads of every task of one kind."""

    def __init__(self, method: type[AdapterModel], config, pooling: str) -> None:
        self.method, self.config, self.pooling = method, config, pooling
        self.vectors: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        self.stacked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(self, vectors: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> int:
        self.vectors.append(vectors)
        self.weights.append(weight)
        self.biases.append(bias)
        self.stacked = None
        return len(self.vectors) - 1

    def stacks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vectors, head weights, head biases), heads padded to the kind's most labels; built once per change."""
        if self.stacked is None:
            most = max(w.shape[0] for w in self.weights)
            self.stacked = (torch.stack(self.vectors), torch.stack([_pad_rows(w, most) for w in self.weights]),
                            torch.stack([_pad_rows(b, most) for b in self.biases]))
        return self.stacked


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """A head's weight (labels, H) or bias (labels,) with zero rows up to `rows` labels (never read back)."""
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


class TaskBank:
    """Adapters of one backbone, by name; `predict` answers examples of any of them in shared forward passes."""

    def __init__(self, backbone: Backbone, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.backbone = backbone
        self.backbone.model.to(self.device).eval()
        self.accepts = accepted_inputs(backbone.model)
        self.tasks: dict[str, Task] = {}
        self.kinds: dict[tuple[str, str, str], _Kind] = {}

    def add(self, name: str, path: str | os.PathLike) -> Task:
        """Load an adapter file (its digest verified), refusing one for another backbone; its vectors are computed
        here, once. A name already loaded is replaced."""
        art = artifact.load(Path(path))  # verifies the tensors' digest and the config against the spec
        if (art.backbone, art.backbone_config_hash) != (self.backbone.name, self.backbone.config_hash):
            raise ValueError(f"{path} was trained on backbone {art.backbone!r} ({art.backbone_config_hash[:12]}), "
                             f"not this server's {self.backbone.name!r} ({self.backbone.config_hash[:12]})")
        config = config_from_dict(art.config)
        model = artifact.apply(art, build_model(self.backbone, config))
        try:  # computed where the adapter was built, then kept on the bank's device
            with torch.no_grad():
                vectors = model.vectors().float().to(self.device)
                weight = model.head.weight.detach().float().to(self.device, copy=True)
                bias = model.head.bias.detach().float().to(self.device, copy=True)
        finally:
            model.detach_layers()
        if name in self.tasks:  # first: the kind it leaves may go with it
            self.remove(name)
        key = (art.method, config.position, config.pooling)
        kind = self.kinds.setdefault(key, _Kind(get_adapter(art.method), config, config.pooling))
        task = Task(name, artifact.tensors_digest(art.tensors), key, kind.add(vectors, weight, bias),
                    tuple(art.label_names), config.num_labels)
        self.tasks[name] = task
        return task

    @classmethod
    def of(cls, files: dict[str, Path], model: str | None = None) -> TaskBank:
        """A bank on the backbone the adapters name (or `model`), holding each of `files` under its name."""
        from fedrp.backbone import load_backbone

        first = next(iter(files.values()))
        bank = cls(load_backbone(model or artifact.load(first, verify=False).backbone))
        for name, path in files.items():
            bank.add(name, path)
        return bank

    def remove(self, name: str) -> None:
        """Unload a task; the rows after it in its kind move up by one."""
        gone = self.tasks.pop(name)
        kind = self.kinds[gone.kind]
        for stack in (kind.vectors, kind.weights, kind.biases):
            del stack[gone.row]
        kind.stacked = None
        for other, task in list(self.tasks.items()):
            if task.kind == gone.kind and task.row > gone.row:
                self.tasks[other] = dataclasses.replace(task, row=task.row - 1)
        if not kind.vectors:
            del self.kinds[gone.kind]

    @torch.no_grad()
    def predict(self, tasks: Sequence[str], texts: Sequence[str], pairs: Sequence[str | None] | None = None,
                max_length: int = MAX_LENGTH) -> list[dict]:
        """One answer per text ({label, logits, scores}, as fedrp.predict gives), for the task named beside it;
        the texts of one kind share a forward pass whatever their tasks."""
        unknown = sorted({t for t in tasks if t not in self.tasks})
        if unknown:
            raise KeyError(f"no task {unknown[0]!r} is loaded; loaded: {sorted(self.tasks)}")
        pairs = list(pairs) if pairs is not None else [None] * len(texts)
        answers: list[dict | None] = [None] * len(texts)
        groups: dict[tuple, list[int]] = {}  # a kind's single texts and its pairs are encoded apart
        for i, name in enumerate(tasks):
            groups.setdefault((self.tasks[name].kind, pairs[i] is None), []).append(i)
        for (key, single), indices in groups.items():
            rows = [self.tasks[tasks[i]] for i in indices]
            logits = self._forward(self.kinds[key], rows, [texts[i] for i in indices],
                                   None if single else [pairs[i] for i in indices], max_length)
            for i, task, row in zip(indices, rows, logits, strict=True):
                answers[i] = {**answer(row[:task.num_labels], task.label_names), "task": task.name,
                              "digest": task.digest}
        return answers

    def _forward(self, kind: _Kind, tasks: list[Task], texts: list[str], pairs: list[str] | None,
                 max_length: int) -> torch.Tensor:
        """Logits (B, most labels) of a batch of one kind, each example through its own task's vectors and head."""
        vectors, weights, biases = kind.stacks()
        rows = torch.tensor([t.row for t in tasks], device=self.device)
        mine = vectors[rows].unsqueeze(2)  # (B, layers, 1, width): each example's own
        tokenizer = self.backbone.tokenizer
        inputs = {k: v.to(self.device) for k, v in batch_inputs(tokenizer, texts, pairs, kind.pooling, max_length).items()}
        hooks = kind.method.attach_vectors(self.backbone.model, kind.config, lambda layer: mine[:, layer])
        try:
            accepted = {k: v for k, v in inputs.items() if k in self.accepts}
            hidden = kind.method.served_hidden_states(self.backbone.model, tokenizer, accepted)
        finally:
            for hook in hooks:
                hook.remove()
        pooled = pool(hidden, inputs["attention_mask"], inputs["input_ids"], kind.pooling, tokenizer.mask_token_id)
        return (torch.einsum("bh,bch->bc", pooled.float(), weights[rows]) + biases[rows]).cpu()


def adapter_files(folder: str | os.PathLike, names: Sequence[str], column: str) -> dict[str, Path]:
    """The adapter file of each task the rows name (folder/<task>.safetensors, read here so that a bad one is
    refused before a backbone loads), or one line naming the first row whose task has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--adapters {folder} is not a folder: expected a folder of <task>.safetensors files")
    files: dict[str, Path] = {}
    for row, name in enumerate(names):
        if name in files:
            continue
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(f"row {row + 1} names task {name!r} in column {column!r}, but {folder} has no "
                             f"{name}.safetensors")
        artifact.load(path)  # its digest and metadata checked now
        files[name] = path
    return files


def common_definition(files: dict[str, Path]) -> dict | None:
    """The task definition the adapters share (their text and pair columns), or None where they differ or
    record none: then the columns must be named."""
    from fedrp.predict import recorded_task

    definitions = []
    for path in files.values():
        art = artifact.load(path, verify=False)
        definitions.append(recorded_task(art.task, art.task_definition))
    columns = {(d["text"], d["pair"]) if d else None for d in definitions}
    return definitions[0] if len(columns) == 1 else None


def predict_rows(bank: TaskBank, ds, task_column: str, text: str, pair: str | None, batch_size: int = 64,
                 max_length: int = MAX_LENGTH) -> Iterator[dict]:
    """One prediction per row, in the file's order, each by the adapter its row names; a batch of rows mixes
    tasks. `row` (from 0), the row's `id` when the file has one, then what TaskBank.predict gives."""
    from fedrp.predict import ID_COLUMN

    has_id = ID_COLUMN in ds.column_names and ID_COLUMN not in (text, pair, task_column)
    columns = list(dict.fromkeys(c for c in (task_column, text, pair, ID_COLUMN if has_id else None) if c))
    row = 0
    for batch in ds.select_columns(columns).iter(batch_size=batch_size):
        texts = [str(t) for t in batch[text]]
        pairs = [str(p) for p in batch[pair]] if pair is not None else None
        answers = bank.predict([str(t) for t in batch[task_column]], texts, pairs, max_length)
        for i, answer_ in enumerate(answers):
            yield {"row": row, **({"id": batch[ID_COLUMN][i]} if has_id else {}), **answer_}
            row += 1
