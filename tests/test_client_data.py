"""What a client trains on: its GLUE partition, or a deployed device's own file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedrp import glue
from fedrp.data import validation_split
from fedrp.federation import (
    FedConfig,
    client_indices,
    client_train_data,
    local_data_file,
    validation_data,
)
from fedrp.refusals import LocalDataError


@pytest.fixture(scope="module")
def tokenizer(default_tokenizer):
    return default_tokenizer


def test_a_device_file_with_label_names_or_ids(tmp_path, tokenizer):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"text": "a fine film", "label": "positive"},
                                                         {"text": "a dull film", "label": "negative"},
                                                         {"text": "fine again", "label": 1}]))
    ds = local_data_file(str(jsonl), glue.get_task("sst2"), tokenizer, FedConfig())
    assert ds["label"] == [1, 0, 1]
    assert {"input_ids", "attention_mask"} <= set(ds.column_names)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("text\tpair\tlabel\nthe cat sat\ta cat was sitting\t4.5\nno\tyes\t0.0\n")
    ds = local_data_file(str(tsv), glue.get_task("stsb"), tokenizer, FedConfig(task="stsb"))
    assert ds["label"] == [4.5, 0.0]
    sep = tokenizer.sep_token_id
    assert ds[0]["input_ids"].count(sep) == 2  # text and pair both encoded


def test_a_bad_device_file_is_refused_with_what_was_expected(tmp_path, tokenizer):
    task, cfg = glue.get_task("sst2"), FedConfig()
    with pytest.raises(LocalDataError, match="expected a CSV, TSV, JSON Lines or Parquet file"):
        local_data_file(str(tmp_path / "missing.jsonl"), task, tokenizer, cfg)
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(LocalDataError, match="must end in one of"):
        local_data_file(str(odd), task, tokenizer, cfg)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"sentence": "hi", "y": 1}))
    with pytest.raises(LocalDataError, match="has no column 'text'"):
        local_data_file(str(wrong), task, tokenizer, cfg)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"text": "hi", "label": "neutral"}))
    with pytest.raises(LocalDataError, match="row 1: label 'neutral' is not one of the task's labels"):
        local_data_file(str(unknown), task, tokenizer, cfg)
    unknown.write_text(json.dumps({"text": "hi", "label": 7}))
    with pytest.raises(LocalDataError, match="row 1: label 7 is not one of the task's labels"):
        local_data_file(str(unknown), task, tokenizer, cfg)
    unknown.write_text("{not json")
    with pytest.raises(LocalDataError, match="cannot be read as json"):
        local_data_file(str(unknown), task, tokenizer, cfg)
    scores = tmp_path / "scores.tsv"
    for bad in ("nan", "inf", "high"):
        scores.write_text(f"text\tpair\tlabel\na\tb\t3.5\nc\td\t{bad}\n")
        with pytest.raises(LocalDataError, match=f"row 2: label '{bad}' is not a number; expected a finite score"):
            local_data_file(str(scores), glue.get_task("stsb"), tokenizer, FedConfig(task="stsb"))


def test_a_device_file_of_a_users_task_in_its_own_columns_and_format(tmp_path, tokenizer):
    """A node of a user's federation reads its own Parquet file, in the columns and labels the task defines."""
    import datasets

    from tests.test_tasks import write_task

    path = write_task(tmp_path, 'name = "tickets"\ntrain = "t.csv"\ntext = "body"\nlabel = "queue"\n'
                                'labels = ["billing", "bugs", "other"]\n', {"t.csv": "body,queue\nx,bugs\n"})
    datasets.Dataset.from_list([{"body": "card charged twice", "queue": "billing"},
                                {"body": "crash on start", "queue": "bugs"}]).to_parquet(str(tmp_path / "mine.parquet"))
    task = glue.get_task(path)
    ds = local_data_file(str(tmp_path / "mine.parquet"), task, tokenizer, FedConfig(task=path))
    assert list(ds["label"]) == [0, 1] and "input_ids" in ds.column_names


def test_glue_partitions_cover_the_pool_once(glue_dir, tokenizer):
    cfg = FedConfig(data_dir=str(glue_dir), max_train_samples=400, max_train_samples_per_client=0, alpha=0.5)
    labels = [0, 1] * 200
    parts = [client_indices(cfg, labels, p, 4) for p in range(4)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(400))
    with pytest.raises(ValueError, match=r"partition-id must be in \[0, 4\)"):
        client_indices(cfg, labels, 4, 4)
    sizes = [len(client_train_data(cfg, tokenizer, p, 4)) for p in range(4)]
    assert sum(sizes) == 400


def test_validation_examples_are_held_out_of_every_client_and_used_for_evaluation(glue_dir, tokenizer):
    cfg = FedConfig(task="rte", data_dir=str(glue_dir), validation_samples=300, max_train_samples_per_client=0)

    def texts(ds) -> set[tuple[int, ...]]:  # RTE's pairs are distinct, so their token ids name them
        return {tuple(ids) for ids in ds["input_ids"]}

    held_out = validation_data(cfg, tokenizer)
    clients = [client_train_data(cfg, tokenizer, p, 4) for p in range(4)]
    assert len(held_out) == 300 and sum(len(c) for c in clients) == 2490 - 300
    assert all(not texts(held_out) & texts(c) for c in clients)
    assert texts(held_out) == texts(validation_data(cfg, tokenizer))  # the same examples in every run
    every = set().union(*(texts(c) for c in clients)) | texts(held_out)
    assert len(every) == len({tuple(ids) for ids in client_train_data(
        FedConfig(task="rte", data_dir=str(glue_dir), max_train_samples_per_client=0), tokenizer, 0, 1)["input_ids"]})
    with pytest.raises(ValueError, match="validation-samples must be between 1 and 2489"):
        validation_split(2490, 2490)


def test_a_client_trains_with_the_rate_and_epochs_the_round_message_sets(glue_dir):
    """The server owns the schedule: the client's own run config says lr 0.05, one epoch and cosine
    decay, but the round's message carries what it trains with; a malformed one is refused."""
    from flwr.app import Context, RecordDict

    from clients.client_app import _local_round
    from fedrp.federation import identity, initial_state, local_train, model_for

    cfg = FedConfig(task="sst2", data_dir=str(glue_dir), max_train_samples=160, max_train_samples_per_client=16,
                    d=64, bf16="off", lr=0.05, num_server_rounds=3)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 2, "num-partitions": 4},
                      state=RecordDict(), run_config={})
    start = initial_state(cfg)
    message = {**identity(model_for(cfg)), "server-round": 2, "lr": 0.002, "local-epochs": 2.0}
    got, _, _ = _local_round(cfg, message, start, context)
    data = client_train_data(cfg, model_for(cfg).tokenizer, 2, 4)
    as_sent = dataclasses.replace(cfg, lr=0.002, lr_decay="none", local_epochs=2.0)
    want, _ = local_train(as_sent, start, data, 2, 2)
    own, _ = local_train(cfg, start, data, 2, 2)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert any(not np.array_equal(own[k], want[k]) for k in want)  # its own settings would give another state
    for bad in ({"lr": "fast"}, {"lr": 0.0}, {"local-epochs": None}):
        with pytest.raises(ValueError, match="the round's message"):
            _local_round(cfg, {**message, **bad}, start, context)


def test_a_client_refuses_what_it_may_and_a_bug_fails_loudly(glue_dir, monkeypatch):
    """A projection mismatch is a refusal (error code REFUSED, stored as client-refused); a ValueError from a
    bug in training is not caught as one: it reaches Flower, which the server records as a client error."""
    from clients import client_app
    from fedrp.refusals import REFUSED
    from tests.test_warm_worker import node_context, tiny, train

    cfg = tiny(glue_dir)
    app = client_app.build_client_app()
    message = train(cfg)
    message.content["config"]["fingerprint"] = "0" * 64
    reply = app(message, node_context(cfg.to_run_config()))
    assert reply.has_error() and reply.error.code == REFUSED and "fingerprint mismatch" in reply.error.reason

    def bug(*args, **kwargs):
        raise ValueError("a bug in local training")

    monkeypatch.setattr(client_app, "local_train", bug)
    with pytest.raises(Exception, match="a bug in local training"):
        app(train(cfg), node_context(cfg.to_run_config()))


def test_the_data_seed_redraws_the_partitions_and_keeps_the_projections(glue_dir, tokenizer):
    from fedrp.federation import identity, model_for, round_seed

    base = FedConfig(task="sst2", data_dir=str(glue_dir), max_train_samples=400, d=64)
    redrawn, reprojected = dataclasses.replace(base, data_seed=1), dataclasses.replace(base, seed=1)

    def client0(cfg):
        return client_train_data(cfg, tokenizer, 0, 4)["input_ids"]

    assert client0(redrawn) != client0(base) and client0(reprojected) == client0(base)
    fingerprint = {name: identity(model_for(cfg))["fingerprint"] for name, cfg in
                   (("base", base), ("redrawn", redrawn), ("reprojected", reprojected))}
    assert fingerprint["redrawn"] == fingerprint["base"] != fingerprint["reprojected"]
    assert round_seed(redrawn.data_seed, 1, 0) != round_seed(base.data_seed, 1, 0)


def test_min_partition_size_reaches_the_partitioner(tmp_path, monkeypatch):
    """Quantity skew at alpha 0.1 over 200 examples: with the run config's min-partition-size of 10 every
    client gets at least 10; were the setting dropped on the way (min 1), four clients would get 1 or 2."""
    monkeypatch.setenv("FEDRP_CACHE", str(tmp_path))  # a fresh partition cache: computed, not read back
    labels = [0, 1] * 100
    cfg = FedConfig(partition_scheme="quantity", alpha=0.1, min_partition_size=10)
    sizes = [len(client_indices(cfg, labels, pid, 10)) for pid in range(10)]
    assert sum(sizes) == 200 and min(sizes) == 10, sizes
    cfg = dataclasses.replace(cfg, min_partition_size=20)
    assert min(len(client_indices(cfg, labels, pid, 10)) for pid in range(10)) == 20


def test_a_device_whose_task_file_maps_labels_otherwise_refuses_the_round(tmp_path, glue_dir):
    """The server sends its task's label map and fingerprint each round (as it sends the projection's); a node
    whose own task file (node config `task-file`) lists the labels in another order would train its examples
    under the wrong ids, so it refuses; one with the same map trains."""
    from flwr.app import Context, RecordDict

    from clients import client_app
    from fedrp.refusals import REFUSED
    from fedrp.tasks import label_identity
    from tests.test_tasks import write_task
    from tests.test_warm_worker import train

    rows = "review,stars\n" + "".join(f"text {i},{('poor', 'good')[i % 2]}\n" for i in range(12))
    body = 'name = "reviews"\ntrain = "t.csv"\ntext = "review"\nlabel = "stars"\n'
    run_task = write_task(tmp_path / "server", body + 'labels = ["poor", "good"]\n', {"t.csv": rows})
    swapped = write_task(tmp_path / "node", body + 'labels = ["good", "poor"]\n', {"t.csv": rows})
    cfg = FedConfig(task=run_task, d=64, bf16="off")
    message = train(cfg)
    for key, value in label_identity(glue.get_task(run_task)).items():
        message.content["config"][key] = value
    app = client_app.build_client_app()

    def node(task_file: str) -> Context:
        return Context(run_id=1, node_id=7, state=RecordDict(), run_config=cfg.to_run_config(),
                       node_config={"data-file": str(tmp_path / "node" / "t.csv"), "task-file": task_file})

    reply = app(message, node(swapped))
    assert reply.has_error() and reply.error.code == REFUSED and "label map mismatch" in reply.error.reason
    assert '"labels":["poor","good"]' in reply.error.reason and '"labels":["good","poor"]' in reply.error.reason
    reply = app(message, node(run_task))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
