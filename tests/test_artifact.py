"""The per-task artifact: round trip, and refusal of anything that does not belong together."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fedrp import artifact
from fedrp.adapters import build_model, make_config
from fedrp.backbone import DEFAULT_BACKBONE, load_backbone


@pytest.fixture
def trained(default_backbone, tmp_path):
    model = build_model(default_backbone, make_config("slash", d=256))
    with torch.no_grad():
        model.z.normal_()
        model.head.bias.fill_(0.25)
    art = artifact.from_model(model, task="sst2", label_names=["negative", "positive"], metric={"accuracy": 0.875})
    return model, artifact.save(art, tmp_path / "sst2.safetensors")


def test_round_trip_keeps_tensors_and_metadata(trained):
    model, path = trained
    art = artifact.load(path)
    for name, tensor in model.state_vectors().items():
        assert torch.equal(art.tensors[name], tensor)
    assert art.method == "slash" and art.task == "sst2" and art.label_names == ["negative", "positive"]
    assert art.metric == {"accuracy": 0.875}
    assert art.backbone == DEFAULT_BACKBONE
    assert art.spec == model.spec and art.fingerprint == model.fingerprint
    assert art.params == 256 + 384 * 2 + 2

    restored, _ = artifact.load_model(path)
    assert restored.backbone_config_hash == model.backbone_config_hash
    batch = {"input_ids": torch.tensor([[101, 2307, 103, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(restored(**batch), model(**batch))


def test_loading_onto_another_backbone_is_refused(trained, tiny_backbone):
    _, path = trained
    with pytest.raises(ValueError, match="was trained on backbone .*all-MiniLM-L6-v2.* not on 'tiny-bert'"):
        artifact.load_model(path, backbone=tiny_backbone("bert"))


def test_loading_onto_another_spec_is_refused(trained):
    _, path = trained
    other = build_model(load_backbone(), make_config("slash", d=256, seed=1))
    with pytest.raises(ValueError, match="projection spec"):
        artifact.apply(artifact.load(path), other)


def test_loading_onto_another_method_is_refused(trained):
    _, path = trained
    other = build_model(load_backbone(), make_config("jrwarp", d=256))
    with pytest.raises(ValueError, match="method 'slash'"):
        artifact.apply(artifact.load(path), other)


def _definition(**changes) -> dict:
    """SST-2's definition as an adapter records it, with `changes`."""
    return {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text": "sentence",
            "pair": None, "label": "label", "metrics": ["accuracy"], **changes}


def _rewrite_metadata(path, target, change):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["fedrp"])
    change(meta)
    save_file(load_file(path), target, metadata={"fedrp": json.dumps(meta)})


def test_tampered_fingerprint_is_refused(trained, tmp_path):
    _, path = trained
    bad = tmp_path / "bad.safetensors"
    _rewrite_metadata(path, bad, lambda m: m.update(fingerprint="ab" * 32))
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        artifact.load(bad)


def test_tampered_spec_is_refused(trained, tmp_path):
    _, path = trained
    bad = tmp_path / "bad.safetensors"
    _rewrite_metadata(path, bad, lambda m: m["spec"].update(seed=9))
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        artifact.load(bad)


def test_one_flipped_byte_in_the_trained_tensors_is_refused(trained, tmp_path):
    _, path = trained
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # the last tensor's last float32: its exponent changes, the value stays finite
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    assert all(torch.isfinite(t).all() for t in load_file(bad).values())
    assert any(not torch.equal(load_file(bad)[k], v) for k, v in load_file(path).items())
    with pytest.raises(ValueError, match="do not match the digest"):
        artifact.load(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_even_with_a_matching_digest(trained, tmp_path, value):
    model, _ = trained
    art = artifact.from_model(model)
    art.tensors["z"][3] = value
    path = tmp_path / "nonfinite.safetensors"  # written by hand (save refuses it); the digest covers the NaN
    save_file(art.tensors, path, metadata={"fedrp": json.dumps(art.metadata(), sort_keys=True)})
    with pytest.raises(ValueError, match=r"non-finite values in \['z'\]"):
        artifact.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("backbone"), r"lacks \['backbone'\]"),
    (lambda m: m.pop("tensors_sha256"), r"lacks \['tensors_sha256'\]"),
    (lambda m: m.update(format="fedrp-adapter/1"), "format 'fedrp-adapter/1'"),
    # lost from the adapter config: found here, not as a KeyError or as a mismatch once the backbone has loaded
    (lambda m: m["config"].pop("pooling"), r"adapter config lacks \['pooling'\]"),
    (lambda m: m["config"].pop("d"), r"adapter config lacks \['d'\]"),
    (lambda m: m["config"].pop("method"), "no adapter config naming its method"),
    (lambda m: m.update(config="slash"), "no adapter config naming its method"),
    (lambda m: m["config"].update(seed=3), "config gives the projection .* its spec holds"),
    (lambda m: m["config"].update(num_labels=3), "its config .* needs z of 256 and a head of 3 rows"),
    (lambda m: m.update(label_names=None), "label_names None are not a list of names"),
    (lambda m: m.update(label_names=["a", "b", "c"]), "names 3 labels for a head of 2 outputs"),
    # a recorded task definition must be whole, and agree with the task name, label names and head it sits beside
    (lambda m: m.update(task_definition=_definition()) or m["task_definition"].pop("text"),
     r"task_definition holds \['kind', 'label', 'labels', 'metrics', 'name', 'pair'\]; expected the keys"),
    (lambda m: m.update(task_definition="sst2"), "task_definition holds str; expected the keys"),
    (lambda m: m.update(task_definition=_definition(kind="ordinal")), "is not what fedrp writes"),
    (lambda m: m.update(task_definition=_definition(text=3)), "is not what fedrp writes"),
    (lambda m: m.update(task_definition=_definition(labels=["positive", "negative"])),
     r"disagrees with its task 'sst2', label_names \['negative', 'positive'\] or head of 2 outputs"),
    (lambda m: m.update(task_definition=_definition(name="reviews")), "disagrees with its task 'sst2'"),
    (lambda m: m.update(task_definition=_definition(kind="regression", labels=[]), label_names=[]),
     "disagrees with its task .* or head of 2 outputs"),
])
def test_metadata_that_lost_a_key_or_predates_the_digest_is_refused(trained, tmp_path, change, message):
    _, path = trained
    bad = tmp_path / "bad.safetensors"
    _rewrite_metadata(path, bad, change)
    with pytest.raises(ValueError, match=message):
        artifact.load(bad)


def test_files_that_are_not_artifacts_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter file"):
        artifact.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        artifact.load(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"z": torch.zeros(3)}, plain)
    with pytest.raises(ValueError, match="without fedrp metadata"):
        artifact.load(plain)


def test_wrong_tensor_shapes_are_refused(default_backbone):
    model = build_model(default_backbone, make_config("slash", d=64))
    tensors = model.state_vectors()
    tensors["z"] = torch.zeros(65)
    with pytest.raises(ValueError, match=r"'z' has shape \(65,\), this model expects \(64,\)"):
        model.load_state_vectors(tensors)


def test_failed_save_keeps_the_previous_file(trained):
    model, path = trained
    before = path.read_bytes()
    art = artifact.from_model(model)
    art.tensors["z"] = torch.zeros(2, 2)[:, 0]  # non-contiguous: safetensors refuses to write it
    with pytest.raises(ValueError):
        artifact.save(art, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_written(trained, value):
    """A diverged training must not leave an adapter behind, nor replace the good one already there."""
    model, path = trained
    before = path.read_bytes()
    art = artifact.from_model(model)
    art.tensors["head.bias"][0] = value
    with pytest.raises(ValueError, match=r"non-finite values in \['head.bias'\]"):
        artifact.save(art, path)
    with pytest.raises(ValueError, match="non-finite"):
        artifact.save(art, path.with_name("new.safetensors"))
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]


def test_save_without_overwrite_keeps_the_file_there(trained):
    model, path = trained
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists: pass --overwrite"):
        artifact.save(artifact.from_model(model, task="rte"), path, overwrite=False)
    assert path.read_bytes() == before
    other = artifact.save(artifact.from_model(model), path.with_name("b.safetensors"), overwrite=False)
    assert artifact.load(other).task is None and sorted(p.name for p in path.parent.iterdir()) == [
        "b.safetensors", path.name]


def test_an_adapter_records_its_task_without_its_data(default_backbone, tmp_path):
    """A user's task (from its TOML) is recorded whole but for where its files are; the names are the user's."""
    from fedrp.tasks import load_task

    (tmp_path / "train.csv").write_text("review,stars\ngood,pos\nbad,neg\n")
    (tmp_path / "task.toml").write_text('name = "reviews"\ntrain = "train.csv"\ntext = "review"\npair = "reply"\n'
                                        'label = "stars"\nlabels = ["neg", "pos"]\nmetrics = ["macro_f1"]\n')
    model = build_model(default_backbone, make_config("slash", d=64))
    path = artifact.save(artifact.from_model(model, task=load_task(tmp_path / "task.toml")), tmp_path / "a.safetensors")
    art = artifact.load(path)
    assert art.task == "reviews" and art.label_names == ["neg", "pos"]
    assert art.task_definition == {"name": "reviews", "kind": "classification", "labels": ["neg", "pos"],
                                   "text": "review", "pair": "reply", "label": "stars", "metrics": ["macro_f1"]}
    assert str(tmp_path) not in json.dumps(art.metadata())  # no data path travels with the adapter


@pytest.mark.parametrize("name, kind, columns", [
    ("sst2", "classification", ("sentence", None)), ("cola", "classification", ("sentence", None)),
    ("mrpc", "classification", ("sentence1", "sentence2")), ("stsb", "regression", ("sentence1", "sentence2")),
    ("mnli", "classification", ("premise", "hypothesis")),
])
def test_a_glue_task_is_recorded_with_its_hub_column_names(name, kind, columns):
    from fedrp.glue import TASKS

    definition = artifact.task_definition(TASKS[name])
    assert (definition["kind"], definition["text"], definition["pair"], definition["label"]) == (kind, *columns, "label")
    assert definition["labels"] == list(TASKS[name].label_names)


def test_an_adapter_without_a_recorded_definition_still_loads(trained, tmp_path):
    """Adapters written before definitions were recorded keep format /2 and load; their GLUE task is looked up."""
    from fedrp.predict import recorded_task

    _, path = trained
    meta = artifact.load(path).metadata()
    assert meta["format"] == "fedrp-adapter/2" and "task_definition" not in meta
    assert artifact.load(path).task_definition is None
    assert recorded_task("sst2", None) == _definition()
    assert recorded_task("reviews", None) is None
    old = tmp_path / "with-definition.safetensors"  # and one that records it agrees with the GLUE lookup
    _rewrite_metadata(path, old, lambda m: m.update(task_definition=_definition()))
    assert artifact.load(old).task_definition == _definition()
