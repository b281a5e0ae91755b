"""fedrp.serving.TaskBank: many adapters on one backbone; a batch that mixes tasks answers each example as
`fedrp predict` answers it with that example's own adapter."""

from __future__ import annotations

import pytest
import torch

from fedrp import artifact
from fedrp.adapters import build_model, make_config
from fedrp.backbone import load_backbone
from fedrp.predict import predict
from fedrp.serving import TaskBank
from tests.conftest import PAIRS, TEXTS

# (method, options, labels): two positions of SLaSh, JR-WARP, pooling cls, a regression head, three labels.
ADAPTERS = {
    "out-a": ("slash", {}, ["neg", "pos"]),
    "out-b": ("slash", {"seed": 5}, ["no", "yes"]),
    "inter": ("slash", {"shift_position": "intermediate"}, ["a", "b", "c"]),
    "prompt": ("jrwarp", {}, ["neg", "pos"]),
    "cls": ("slash", {"pooling": "cls"}, ["x", "y"]),
    "score": ("slash", {}, ["score"]),
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Each adapter written to a file, z and the head scaled so that a wrong gather shows."""
    folder, backbone, out = tmp_path_factory.mktemp("adapters"), load_backbone(), {}
    for i, (name, (method, options, labels)) in enumerate(ADAPTERS.items()):
        torch.manual_seed(i)
        model = build_model(backbone, make_config(method, d=64, num_labels=len(labels), **options))
        with torch.no_grad():
            model.z.normal_(0, 30)
            model.head.weight.normal_(0, 1)
        out[name] = artifact.save(artifact.from_model(model, task=name, label_names=labels), folder / f"{name}.safetensors")
        model.detach_layers()
    return out


def test_a_mixed_batch_answers_each_text_as_its_own_adapter_does(adapters):
    bank = TaskBank(load_backbone())
    for name, path in adapters.items():
        bank.add(name, path)
    names = list(ADAPTERS)
    tasks = [names[i % len(names)] for i in range(2 * len(names))]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(tasks))]
    pairs = [PAIRS[i % len(PAIRS)] if i % 3 == 0 else None for i in range(len(tasks))]
    served = bank.predict(tasks, texts, pairs)
    for task, text, pair, got in zip(tasks, texts, pairs, served, strict=True):
        model, art = artifact.load_model(adapters[task])
        (want,) = predict(model, art.label_names, [text], None if pair is None else [pair])
        model.detach_layers()
        assert got["task"] == task and got["digest"] == artifact.load(adapters[task]).metadata()["tensors_sha256"]
        assert got["label"] == want["label"] and got["logits"] == pytest.approx(want["logits"], abs=1e-5)
    a, b = bank.predict(["out-a", "out-b"], [TEXTS[0]] * 2)
    assert max(abs(x - y) for x, y in zip(a["logits"], b["logits"])) > 0.5  # a gather of the wrong row would show


def test_tasks_come_and_go_and_a_foreign_adapter_is_refused(adapters, tmp_path):
    bank = TaskBank(load_backbone())
    for name in ("out-a", "out-b", "prompt"):
        bank.add(name, adapters[name])
    before = bank.predict(["out-b"], [TEXTS[0]])
    bank.remove("out-a")  # out-b moves up a row and must still answer as itself
    assert bank.predict(["out-b"], [TEXTS[0]])[0]["logits"] == pytest.approx(before[0]["logits"], abs=1e-6)
    with pytest.raises(KeyError, match="no task 'out-a' is loaded"):
        bank.predict(["out-a"], [TEXTS[0]])
    art = artifact.load(adapters["out-a"])
    foreign = artifact.save(artifact.Artifact(**{**vars(art), "backbone": "other/model"}), tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="was trained on backbone 'other/model'"):
        bank.add("foreign", foreign)
    assert sorted(bank.tasks) == ["out-b", "prompt"]
    bank.add("prompt", adapters["prompt"])  # its file read again (changed on disk), the only task of its kind
    assert bank.predict(["prompt"], [TEXTS[0]])[0]["logits"] == pytest.approx(_alone(adapters["prompt"]), abs=1e-5)


def test_predict_over_a_file_answers_each_row_by_the_adapter_it_names(adapters, tmp_path, capsys):
    import json

    from fedrp.cli import main

    folder = next(iter(adapters.values())).parent
    rows = [(name, TEXTS[i % len(TEXTS)]) for i, name in enumerate(["out-a", "prompt", "out-b", "out-a", "score"] * 3)]
    data = tmp_path / "rows.csv"
    data.write_text("id,task,text\n" + "".join(f"r{i},{t},\"{x}\"\n" for i, (t, x) in enumerate(rows)))
    out = tmp_path / "out.jsonl"
    main(["predict", "--adapters", str(folder), "--input", str(data), "--text-column", "text", "--output", str(out),
          "--batch-size", "4", "--json"])
    assert json.loads(capsys.readouterr().out) == {"output": str(out), "rows": len(rows)}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for i, ((task, text), got) in enumerate(zip(rows, lines, strict=True)):
        model, art = artifact.load_model(adapters[task])
        (want,) = predict(model, art.label_names, [text])
        model.detach_layers()
        assert (got["row"], got["id"], got["task"]) == (i, f"r{i}", task)
        assert got["logits"] == pytest.approx(want["logits"], abs=1e-5)


def test_a_row_naming_a_task_without_an_adapter_is_refused_before_the_model_loads(adapters, tmp_path, capsys,
                                                                                     no_model):
    from fedrp.cli import main

    folder = next(iter(adapters.values())).parent
    data = tmp_path / "rows.csv"
    data.write_text("task,text\nout-a,fine\nmissing,bad\n")
    assert main(["predict", "--adapters", str(folder), "--input", str(data), "--text-column", "text"]) == 2
    assert "row 2 names task 'missing' in column 'task', but" in capsys.readouterr().err


def _alone(path) -> list[float]:
    model, art = artifact.load_model(path)
    try:
        return predict(model, art.label_names, [TEXTS[0]])[0]["logits"]
    finally:
        model.detach_layers()

