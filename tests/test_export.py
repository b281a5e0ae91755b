"""Export: a plain transformers folder that predicts what the adapter predicts."""

import json
import subprocess
import sys

import pytest
import torch

from fedrp import artifact
from fedrp.adapters import build_model, make_config
from fedrp.backbone import load_backbone
from fedrp.export import export, load_exported
from fedrp.predict import predict
from tests.conftest import PAIRS, TEXTS

VARIANTS = [("slash", "output"), ("slash", "intermediate"), ("slash", "attention"), ("jrwarp", None)]


def _adapter(tmp_path, method, position, pooling="mask"):
    extra = {"shift_position": position} if position else {}
    model = build_model(load_backbone(), make_config(method, pooling=pooling, **extra))
    with torch.no_grad():
        model.z.mul_(40)  # shifts large enough that a wrong fold would show
        model.head.weight.mul_(20)
    path = artifact.save(artifact.from_model(model, task="sst2", label_names=["neg", "pos"]), tmp_path / "a.safetensors")
    return model, path


@pytest.mark.parametrize("method, position", VARIANTS)
def test_exported_model_predicts_what_the_adapter_predicts(tmp_path, method, position):
    model, path = _adapter(tmp_path, method, position)
    out = export(path, tmp_path / "exported")
    exported = load_exported(out)
    a = predict(model, ["neg", "pos"], TEXTS, PAIRS)
    b = predict(exported, exported.label_names, TEXTS, PAIRS)
    for x, y in zip(a, b):
        assert x["label"] == y["label"]
        assert x["logits"] == pytest.approx(y["logits"], abs=1e-5)


@pytest.mark.parametrize("method, position", VARIANTS)
def test_export_keeps_the_architecture_and_stores_no_projection(tmp_path, method, position):
    model, path = _adapter(tmp_path, method, position)
    out = export(path, tmp_path / "exported")
    original = load_backbone().model.state_dict()
    exported = load_exported(out).backbone.state_dict()
    assert exported.keys() == original.keys()
    changed = {k for k in original if not torch.equal(original[k], exported[k])}
    if method == "jrwarp":
        assert changed == set()
        files = {p.name for p in out.iterdir()}
        assert "fedrp_prompt.safetensors" in files
    else:
        target = {"output": "output.dense.bias", "intermediate": "intermediate.dense.bias", "attention": "attention.output.dense.bias"}[position]
        assert changed == {f"encoder.layer.{i}.{target}" for i in range(6)}
        shifts = model.vectors().detach()
        for i in range(6):
            key = f"encoder.layer.{i}.{target}"
            torch.testing.assert_close(exported[key] - original[key], shifts[i], rtol=1e-5, atol=1e-6)
    info = json.loads((out / "fedrp_head.json").read_text())
    assert info["method"] == method and info["label_names"] == ["neg", "pos"]


def test_plain_transformers_loads_the_export_without_fedrp(tmp_path):
    _, path = _adapter(tmp_path, "slash", "output")
    out = export(path, tmp_path / "exported")
    code = f"""
import sys
sys.modules["fedrp"] = None  # any import of fedrp now fails
from transformers import AutoModel, AutoTokenizer
m = AutoModel.from_pretrained({str(out)!r})
t = AutoTokenizer.from_pretrained({str(out)!r})
print(type(m).__name__, m(**t(["hello"], return_tensors="pt")).last_hidden_state.shape[-1])
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["BertModel", "384"]


def test_export_refuses_to_overwrite_a_foreign_folder(tmp_path, monkeypatch):
    _, path = _adapter(tmp_path, "slash", "output")
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    with monkeypatch.context() as m:  # refused before the backbone loads
        m.setattr(artifact, "load_model", lambda *a, **k: pytest.fail("loaded the backbone before refusing"))
        with pytest.raises(FileExistsError, match="not a fedrp export"):
            export(path, foreign)
        with pytest.raises(FileExistsError, match="is a file: expected --out to be a new or empty folder"):
            export(path, foreign / "data.txt" / "sub")
    assert (foreign / "data.txt").read_text() == "keep me"
    # a previous export is replaced cleanly
    export(path, tmp_path / "exported")
    export(path, tmp_path / "exported")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("labels, id2label, problem", [
    (["bad", "good", "meh"], {0: "bad", 1: "good", 2: "meh"}, None),  # a user's names, in the head's order
    ([], {0: "LABEL_0"}, "regression"),
])
def test_export_names_the_users_labels_in_its_config(tmp_path, labels, id2label, problem):
    """transformers reads the label names (id2label, label2id) from the exported config.json; the task's
    definition, without its data, goes along in fedrp_head.json."""
    from transformers import AutoConfig

    from fedrp.tasks import load_task

    kind = f"labels = {json.dumps(labels)}" if labels else 'kind = "regression"'
    (tmp_path / "train.csv").write_text("text,y\na,b\n")
    (tmp_path / "task.toml").write_text(f'name = "mine"\ntrain = "train.csv"\ntext = "text"\nlabel = "y"\n{kind}\n')
    task = load_task(tmp_path / "task.toml")
    model = build_model(load_backbone(), make_config("slash", d=64, num_labels=task.num_labels))
    path = artifact.save(artifact.from_model(model, task=task), tmp_path / "a.safetensors")
    out = export(path, tmp_path / "exported")
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == id2label and config.label2id == {v: k for k, v in id2label.items()}
    assert config.problem_type == problem
    info = json.loads((out / "fedrp_head.json").read_text())
    assert info["label_names"] == labels and info["task_definition"] == artifact.load(path).task_definition
    assert load_exported(out).label_names == labels
