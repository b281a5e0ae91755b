"""The `fedrp` command as a user runs it: offline, on the default backbone, JSON on stdout."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedrp.cli import build_parser, main


def fedrp(capsys, *args, check=True) -> SimpleNamespace:
    """`fedrp ARGS` in this process: a `fedrp` process spends seconds importing torch before it starts, and
    test_every_command_has_help runs the entry point itself once."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    out, err = capsys.readouterr()
    if check:
        assert code == 0, err
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sst2.safetensors"
    assert main(["init", "--method", "jrwarp", "--d", "512", "--labels", "negative", "positive", "--task", "sst2",
                 "--out", str(path)]) == 0
    return path


def test_inspect_json_has_the_keys_other_tools_read(adapter, capsys):
    info = json.loads(fedrp(capsys, "inspect", str(adapter), "--json").stdout)
    assert info["method"] == "jrwarp" and info["task"] == "sst2"
    assert info["params"] == 512 + 384 * 2 + 2
    assert info["bytes_fp32"] == 4 * info["params"] and info["bytes_fp16"] == 2 * info["params"]
    assert len(info["fingerprint"]) == 64
    assert {"seed", "d", "distribution", "position"} <= set(info["spec"])
    assert info["spec"]["d"] == 512 and info["spec"]["position"] == "prompt"
    assert info["backbone"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_inspect_text_names_the_sizes(adapter, capsys):
    out = fedrp(capsys, "inspect", str(adapter)).stdout
    assert "5,128 B in fp32" in out and "2,564 B in fp16" in out


def test_export_and_predict_agree(adapter, tmp_path, capsys):
    out = tmp_path / "exported"
    fedrp(capsys, "export", "--adapter", str(adapter), "--out", str(out), "--json")
    args = ["--text", "a gripping film, and it was great", "--json"]  # SST-2: one sentence
    a = json.loads(fedrp(capsys, "predict", "--adapter", str(adapter), *args).stdout)
    b = json.loads(fedrp(capsys, "predict", "--exported", str(out), *args).stdout)
    assert a["label"] == b["label"] and a["label"] in ("negative", "positive")
    assert len(a["logits"]) == 2
    assert a["logits"] == pytest.approx(b["logits"], abs=1e-5)


def test_every_command_has_help(capsys):
    """In this process (a `fedrp train` process spends seconds importing torch first); one process checks the entry
    point, and that `fedrp --help` imports none of the heavy libraries."""
    for command in ("init", "inspect", "export", "predict", "train", "eval", "partition", "dashboard", "serve"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0 and f"usage: fedrp {command}" in capsys.readouterr().out, command
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "fedrp", "--help"], capture_output=True, text=True,
                         check=True)
    assert all(command in res.stdout for command in ("train", "partition", "dashboard", "serve"))
    imported = {line.rpartition("|")[2].strip() for line in res.stderr.splitlines()}
    assert "fedrp.cli" in imported and not imported & {"torch", "transformers", "datasets"}  # answers in a second


def test_bad_input_gets_one_clear_line(tmp_path, capsys):
    res = fedrp(capsys, "inspect", str(tmp_path / "nope.safetensors"), check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"fedrp inspect: error: no adapter file at {tmp_path / 'nope.safetensors'}: expected a .safetensors file written by fedrp"
    ]
    res = fedrp(capsys, "predict", "--exported", str(tmp_path), "--text", "x", check=False)
    assert res.returncode == 2 and "is not a fedrp export" in res.stderr
    res = fedrp(capsys, "init", "--d", "0", "--out", str(tmp_path / "a.safetensors"), check=False)
    assert res.returncode == 2 and "argument --d: expected a positive integer, got '0'" in res.stderr


@pytest.fixture
def glue_env(glue_dir, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FEDRP_GLUE_DIR", str(glue_dir))
    monkeypatch.setenv("FEDRP_CACHE", str(tmp_path_factory.getbasetemp() / "cli-cache"))


def test_train_then_eval_reports_the_same_metrics(glue_env, tmp_path, capsys):
    res = fedrp(capsys, "train", "--task", "rte", "--method", "slash", "--d", "256", "--max-train-samples", "64",
                "--max-eval-samples", "48", "--out", str(tmp_path), "--bf16", "off", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"task", "method", "metrics", "params", "bytes_fp32", "samples_per_second", "wall_seconds", "artifact"} <= set(out)
    assert out["task"] == "rte" and out["method"] == "slash" and out["params"] == 256 + 770
    assert out["bytes_fp32"] == 4 * out["params"] and out["train_examples"] == 64 and out["eval_examples"] == 48
    assert set(out["metrics"]) == {"accuracy"} and out["lr"] == 3e-2
    res = fedrp(capsys, "eval", "--adapter", out["artifact"], "--max-eval-samples", "48", "--json")
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert again["task"] == "rte"
    assert again["metrics"]["accuracy"] == pytest.approx(out["metrics"]["accuracy"], abs=1 / 48 + 1e-9)


def test_train_on_a_validation_split_holds_out_what_a_federation_holds_out(glue_env, glue_dir, tmp_path, capsys,
                                                                          monkeypatch, default_tokenizer):
    """Settings are chosen on held-out training examples, centrally as in a federation: the same held-out
    examples, never trained on, and the same training subset as a federation's pool."""
    from fedrp import centralized
    from fedrp.federation import FedConfig, client_train_data, validation_data

    seen = {}
    train, evaluate = centralized.train, centralized.evaluate
    monkeypatch.setattr(centralized, "train", lambda model, ds, *a: seen.setdefault("train", ds) and train(model, ds, *a))
    monkeypatch.setattr(centralized, "evaluate", lambda model, ds, *a: seen.setdefault("eval", ds) and evaluate(model, ds, *a))
    res = fedrp(capsys, "train", "--task", "rte", "--method", "slash", "--d", "64", "--max-train-samples", "64",
                "--validation-samples", "100", "--out", str(tmp_path), "--bf16", "off", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["evaluated_on"] == "100 held-out training examples" and out["eval_examples"] == 100
    assert out["train_examples"] == 64 and out["artifact"] is None and list(tmp_path.iterdir()) == []

    def texts(ds) -> set[tuple[int, ...]]:  # RTE's pairs are distinct, so their token ids name them
        return {tuple(ids) for ids in ds["input_ids"]}

    fed = FedConfig(task="rte", data_dir=str(glue_dir), validation_samples=100, max_train_samples=64,
                    max_train_samples_per_client=0)
    assert texts(seen["eval"]) == texts(validation_data(fed, default_tokenizer))
    assert texts(seen["train"]) == texts(client_train_data(fed, default_tokenizer, 0, 1))
    assert not texts(seen["train"]) & texts(seen["eval"])
    res = fedrp(capsys, "train", "--task", "rte", "--validation-samples", "2490", check=False)
    assert res.returncode == 2 and "validation-samples must be between 1 and 2489" in res.stderr


def test_train_a_baseline_writes_no_artifact(glue_env, tmp_path, capsys):
    res = fedrp(capsys, "train", "--task", "wnli", "--method", "head", "--max-train-samples", "32",
                "--max-eval-samples", "16", "--out", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["artifact"] is None and out["params"] == 770 and list(tmp_path.iterdir()) == []


def test_partition_json_and_table(glue_env, capsys):
    res = fedrp(capsys, "partition", "--task", "mrpc", "--num-clients", "5", "--scheme", "dirichlet",
                "--alpha", "0.3", "--seed", "1", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"num_clients", "scheme", "alpha", "seed", "sizes", "label_counts"} <= set(out)
    assert out["num_clients"] == 5 and sum(out["sizes"]) == 3668
    assert [sum(c) for c in out["label_counts"]] == out["sizes"]
    table = fedrp(capsys, "partition", "--task", "mrpc", "--num-clients", "5", "--alpha", "0.3", "--seed", "1").stdout
    assert "not_equivalent" in table and f"{out['sizes'][0]:,}" in table


def test_partition_holds_at_strong_label_skew(glue_env, capsys):
    res = fedrp(capsys, "partition", "--task", "cola", "--num-clients", "13", "--scheme", "dirichlet",
                "--alpha", "0.1", "--seed", "5", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["num_clients"] == 13 == len(out["sizes"]) and out["dropped"] == 0 and sum(out["sizes"]) == 8551
    assert min(out["sizes"]) >= 8551 // 13  # balanced, so at or above any --min-size that can be met
    assert 0 < out["mean_label_entropy"] < 0.8  # skewed: CoLA's own label mix has 0.87 bits
    res = fedrp(capsys, "partition", "--task", "cola", "--num-clients", "13", "--min-size", "700", check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "fedrp partition: error: 8551 examples cannot give 13 clients at least 700 each"]


def test_missing_task_data_is_one_line(glue_env, capsys):
    res = fedrp(capsys, "train", "--task", "qqp", check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("fedrp train: error: no GLUE file at ")
    assert "expected the official layout <dir>/QQP/{train,dev}.tsv" in res.stderr


def test_train_with_dp_reports_what_it_spent(glue_env, tmp_path, capsys):
    res = fedrp(capsys, "train", "--task", "sst2", "--method", "jrwarp", "--d", "256", "--max-train-samples", "128",
                "--max-eval-samples", "32", "--out", str(tmp_path), "--bf16", "off", "--json",
               "--dp", "--dp-epsilon", "2", "--dp-max-grad-norm", "0.5", "--dp-accountant", "prv")
    assert res.returncode == 0, res.stderr
    privacy = json.loads(res.stdout)["privacy"]
    assert set(privacy) == {"epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "accountant"}
    assert privacy["epsilon"] <= 2.0 and privacy["delta"] == 1 / 256 and privacy["max_grad_norm"] == 0.5
    assert privacy["accountant"] == "prv" and privacy["steps"] == 4 and privacy["sample_rate"] == 0.25


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which Python writes but JSON does not allow."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_output_stays_valid_with_non_finite_numbers(capsys):
    import argparse

    from fedrp.cli import _emit

    _emit(argparse.Namespace(json=True), {"metrics": {"pearson": float("nan"), "x": [float("-inf"), 1.5]}}, str)
    assert _strict_json(capsys.readouterr().out) == {"metrics": {"pearson": None, "x": [None, 1.5]}}


def _tsv_dirs(root, glue_dir):
    """GLUE folders whose SST-2 files are broken in one way each (the other split is the real one)."""
    real = glue_dir / "SST-2"
    cases = {"empty": ("train", ""), "header-only": ("train", "sentence\tlabel\n"),
             "extra-column": ("dev", "sentence\tlabel\nfine film\t1\textra\n")}
    for name, (split, text) in cases.items():
        folder = root / name / "SST-2"
        folder.mkdir(parents=True)
        for other in ("train", "dev"):
            if other != split:
                (folder / f"{other}.tsv").write_text("".join((real / f"{other}.tsv").open().readlines()[:40]))
        (folder / f"{split}.tsv").write_text(text)
    return root


REFUSED = [
    (["train", "--task", "sst2", "--data-dir", "{tsv}/empty"], "train.tsv is empty"),
    (["train", "--task", "sst2", "--data-dir", "{tsv}/header-only"], "train.tsv has no examples"),
    (["train", "--task", "sst2", "--data-dir", "{tsv}/extra-column"], "dev.tsv line 2: 3 fields, expected 2"),
    (["train", "--task", "sst2", "--data-dir", "{glue}", "--device", "tpu"], "device 'tpu' is not a torch device"),
    (["train", "--task", "sst2", "--data-dir", "{glue}", "--max-length", "0"], "--max-length must be at least 8"),
    (["train", "--task", "sst2", "--data-dir", "{glue}", "--warmup-ratio", "2"], "warmup-ratio must be in [0, 1)"),
    (["init", "--out", "{tmp}"], "is a folder: expected the adapter file"),
    (["partition", "--task", "sst2", "--num-clients", "3", "--classes-per-client", "0", "--data-dir", "{glue}"],
     "--classes-per-client must be at least 1"),
    (["eval", "--adapter", "{adapter}", "--task", "rte", "--data-dir", "{glue}"],
     "adapter was trained for sst2 with labels ['negative', 'positive']; task rte has labels"),
    (["predict", "--adapter", "{adapter}", "--text", "a film", "--text-pair", "another"],
     "--text-pair given, but the adapter's task sst2 classifies one sentence"),
    (["dashboard", "--store", "{tmp}/s.sqlite", "--port", "70000"], "port must be between 1 and 65535"),
    (["train", "--task", "nope"], "unknown GLUE task 'nope'"),
    (["train", "--task", "sst2", "--dp-epsilon", "3"], "--dp-epsilon needs --dp"),
    (["train", "--task", "sst2", "--dp"], "--dp needs --dp-epsilon"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "3", "--method", "bitfit"],
     "DP training supports slash, jrwarp, head, lora; got 'bitfit'"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "3", "--dp-max-grad-norm", "0"],
     "argument --dp-max-grad-norm/--max-grad-norm: expected a finite number above 0, got '0'"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "3", "--dp-max-grad-norm", "inf"],
     "argument --dp-max-grad-norm/--max-grad-norm: expected a finite number above 0, got 'inf'"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "8", "--dp-noise-multiplier", "inf"],
     "argument --dp-noise-multiplier/--noise-multiplier: expected a finite number above 0, got 'inf'"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "inf"], "argument --dp-epsilon/--epsilon: expected a finite number above 0"),
    (["train", "--task", "sst2", "--dp", "--dp-epsilon", "nan"], "argument --dp-epsilon/--epsilon: expected a finite number above 0"),
    (["train", "--task", "wnli", "--data-dir", "{glue}", "--max-length", "1024"],
     ("--max-length 1024 is more than the backbone takes: its 512 position embeddings hold 512 tokens; expected "
      "--max-length of at most 512")),
    (["train", "--task", "wnli", "--data-dir", "{glue}", "--method", "jrwarp", "--max-length", "512"],
     "hold 511 tokens beside the prompt token"),
    (["train", "--task", "wnli", "--data-dir", "{glue}", "--out", "{unwritable}/sub"], "cannot create files in"),
    (["eval", "--adapter", "{adapter}", "--data-dir", "{glue}", "--max-length", "600"],
     "--max-length 600 is more than the backbone takes"),
    (["predict", "--adapter", "{adapter}", "--text", "a film", "--max-length", "512"],
     "hold 511 tokens beside the prompt token; expected --max-length of at most 511"),
    (["init", "--out", "{adapter}"], "exists: pass --overwrite to replace it"),
    (["init", "--out", "{unwritable}/a.safetensors"], "cannot create files in"),
    (["train", "--task", "sst2", "--max-eval-samples", "0"], "argument --max-eval-samples: expected a positive integer"),
    (["train", "--task", "sst2", "--max-train-samples", "-1"], "argument --max-train-samples: expected a positive"),
    (["train", "--task", "sst2", "--d", "0"], "argument --d: expected a positive integer, got '0'"),
    (["train", "--task", "sst2", "--method", "lora", "--lora-rank", "0"], "argument --lora-rank: expected a positive"),
    (["train", "--task", "sst2", "--method", "slash", "--lora-rank", "4"],
     "lora-rank is an option of method lora; method slash would ignore it"),
    (["train", "--task", "sst2", "--method", "lora", "--position", "attention"],
     "position is an option of method slash; method lora would ignore it"),
    (["train", "--task", "sst2", "--epochs", "inf"], "argument --epochs: expected a finite number above 0, got 'inf'"),
    (["train", "--task", "sst2", "--data-dir", "{glue}", "--out", "{adapter}/sub"],
     "is a file: expected a folder to write the adapter into"),
    (["eval", "--adapter", "{adapter}", "--data-dir", "{glue}", "--device", "tpu"], "device 'tpu' is not a torch device"),
    (["eval", "--adapter", "{adapter}", "--max-eval-samples", "0"], "argument --max-eval-samples: expected a positive"),
    (["export", "--adapter", "{adapter}", "--out", "{adapter}"], "is a file: expected --out to be a new or empty folder"),
    (["inspect", "{tmp}/lost-pooling.safetensors"], "adapter config lacks ['pooling']"),
]


def _unwritable(tmp_path) -> Path:
    """A folder this process cannot create files in: an owner-only read folder, or /sys for root (whom the
    permission bits do not stop)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o500)
    return folder


def _lost_key(adapter, target):
    """The adapter again, its config without the pooling key (the writer always stores it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(adapter, framework="pt") as f:
        meta = json.loads(f.metadata()["fedrp"])
    del meta["config"]["pooling"]
    save_file(load_file(adapter), target, metadata={"fedrp": json.dumps(meta)})


@pytest.mark.parametrize("argv, message", REFUSED, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(REFUSED)])
def test_bad_input_is_one_line_and_exit_2_before_training(tmp_path, glue_dir, adapter, capsys, no_model, argv,
                                                          message):
    tsv = _tsv_dirs(tmp_path / "tsv", glue_dir)
    _lost_key(adapter, tmp_path / "lost-pooling.safetensors")
    args = [a.format(tsv=tsv, glue=glue_dir, tmp=tmp_path, adapter=adapter, unwritable=_unwritable(tmp_path))
            for a in argv]
    with pytest.raises(SystemExit) if "argument --" in message else nullcontext() as refused:  # argparse's own
        assert main(args) == 2
    assert refused is None or refused.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_cuda_on_a_build_without_it_is_refused(monkeypatch):
    import torch

    from fedrp.train import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' is not available here"):
        select_device("cuda")


def test_bf16_on_a_device_without_it_is_refused_before_loading(glue_dir, capsys, no_model, monkeypatch):
    from fedrp import train

    monkeypatch.setattr(train, "bf16_supported", lambda device: False)
    assert main(["train", "--task", "sst2", "--data-dir", str(glue_dir), "--bf16", "on", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "fedrp train: error: bf16 was asked for, but cpu here has no native bf16 support"


def test_no_glue_folder_offline_says_how_to_give_one(capsys, no_model, monkeypatch):
    """What datasets raises offline (HF_HUB_OFFLINE=1) for the hub's GLUE, at once: one line, and what to do."""
    from fedrp import glue

    def offline(task, split):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.delenv("FEDRP_GLUE_DIR", raising=False)
    monkeypatch.setattr(glue, "_from_hub", offline)
    for argv in (["train", "--task", "rte"], ["partition", "--task", "rte", "--num-clients", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"fedrp {argv[0]}: error: ConnectionError: "), err
        assert err.endswith("pass --data-dir DIR or set $FEDRP_GLUE_DIR to a local GLUE folder in the official layout")


def test_a_second_train_into_the_same_out_needs_overwrite(glue_dir, tmp_path, capsys, no_model):
    """Refused before the backbone loads, the earlier adapter untouched; --overwrite, or a run that writes no
    adapter, goes on to load it (here: the fixture's AssertionError)."""
    earlier = tmp_path / "wnli-slash.safetensors"
    earlier.write_bytes(b"an earlier adapter")
    base = ["train", "--task", "wnli", "--data-dir", str(glue_dir), "--out", str(tmp_path)]
    assert main(base) == 2
    assert capsys.readouterr().err.strip() == (f"fedrp train: error: --out {tmp_path} already holds wnli-slash."
                                               "safetensors: pass --overwrite to replace it, or choose another --out")
    assert earlier.read_bytes() == b"an earlier adapter"
    for more in (["--overwrite"], ["--method", "head"], ["--validation-samples", "100"]):
        with pytest.raises(AssertionError, match="the model loaded"):
            main(base + more)
    assert list(tmp_path.iterdir()) == [earlier] and earlier.read_bytes() == b"an earlier adapter"
    earlier.unlink()
    earlier.mkdir()  # a folder where the adapter goes: not even --overwrite replaces it
    assert main(base + ["--overwrite"]) == 2
    assert "already holds wnli-slash.safetensors" in capsys.readouterr().err


def test_a_writable_out_leaves_nothing_behind_before_training(glue_dir, tmp_path, no_model):
    """The writability probe creates no folder and leaves no file: a refused or failed run leaves --out as it was."""
    with pytest.raises(AssertionError, match="the model loaded"):
        main(["train", "--task", "wnli", "--data-dir", str(glue_dir), "--out", str(tmp_path / "new" / "runs")])
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_export_is_one_line(adapter, tmp_path, capsys, monkeypatch):
    """A truncated file in an exported folder: one line naming it, exit 2, where a library's traceback was."""
    from fedrp import export

    out = tmp_path / "exported"
    fedrp(capsys, "export", "--adapter", adapter, "--out", out)
    for name, says in (("fedrp_head.json", "fedrp_head.json is unreadable"),
                       ("config.json", "config.json is unreadable"),
                       ("fedrp_head.safetensors", "fedrp_head.safetensors is unreadable (SafetensorError"),
                       ("fedrp_prompt.safetensors", "fedrp_prompt.safetensors is unreadable (SafetensorError"),
                       ("model.safetensors", "its model (config.json, model.safetensors) is unreadable")):
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(out, broken, copy_function=os.link)  # links: cheap, and the export stays whole
        whole = (out / name).read_bytes()
        (broken / name).unlink()
        (broken / name).write_bytes(whole[: len(whole) // 2])
        res = fedrp(capsys, "predict", "--exported", broken, "--text", "a film", check=False)
        err = res.stderr.strip()
        assert res.returncode == 2 and len(err.splitlines()) == 1 and says in err, err

    def unreached(path):
        raise AssertionError("the exported weights loaded before the max length was checked")

    monkeypatch.setattr(export, "load_exported", unreached)
    res = fedrp(capsys, "predict", "--exported", out, "--text", "a film", "--max-length", "512", check=False)
    assert res.returncode == 2 and res.stderr.strip() == (
        "fedrp predict: error: --max-length 512 is more than the backbone takes: its 512 position embeddings hold "
        "511 tokens beside the prompt token; expected --max-length of at most 511")


def test_every_train_option_comes_from_its_config_field_with_the_fields_default():
    """`fedrp train`'s options are generated from fedrp.spec.TrainOptions (and ModelOptions): each default and
    help is stated once, and a run with no options is a RunConfig with the dataclass's defaults."""
    import dataclasses

    from fedrp.centralized import RunConfig
    from fedrp.spec import TrainOptions

    parser = build_parser()
    args = vars(parser.parse_args(["train", "--task", "sst2"]))
    fields = {f.name: f for f in dataclasses.fields(TrainOptions)}
    for name, f in fields.items():
        if name != "task":
            assert args[name] == f.default, name
    train = next(a for a in parser._subparsers._group_actions[0].choices["train"]._actions if a.dest == "batch_size")
    assert train.help.startswith(fields["batch_size"].metadata["help"])
    own = {"json", "func", "command", "verbose", "dp", "dp_epsilon", "dp_delta", "dp_max_grad_norm", "dp_accountant",
           "dp_noise_multiplier"}  # the command's own and DP's (fedrp.privacy.config) options
    assert set(args) - own == set(fields)  # no option stated by hand beside the dataclass
    cfg = RunConfig(**{k: v for k, v in args.items() if k in fields})
    assert cfg == RunConfig(task="sst2")


def test_the_dp_options_carry_the_run_configs_names_and_the_old_ones_still_work_with_a_warning(capsys):
    parser = build_parser()
    new = parser.parse_args(["train", "--task", "sst2", "--dp", "--dp-epsilon", "3", "--dp-max-grad-norm", "0.5"])
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["train", "--task", "sst2", "--dp", "--epsilon", "3", "--max-grad-norm", "0.5"])
    assert (old.dp_epsilon, old.dp_max_grad_norm) == (new.dp_epsilon, new.dp_max_grad_norm) == (3.0, 0.5)
    err = capsys.readouterr().err
    assert "--epsilon is now --dp-epsilon" in err and "--max-grad-norm is now --dp-max-grad-norm" in err
