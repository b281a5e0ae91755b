"""A client's examples: its share of the GLUE training pool (a label-skewed partition), held-out
validation examples, or a deployed node's own file."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import datasets
import numpy as np

from fedrp import cache, data, glue, tasks
from fedrp.backbone import load_backbone
from fedrp.federation.config import FedConfig, check_run_max_length
from fedrp.partition import partition, partition_labels
from fedrp.refusals import LocalDataError

PARTITION_CACHE_VERSION = 2  # bump when fedrp.partition changes which indices a client gets


def _pool_train(cfg: FedConfig, tokenizer) -> tuple[datasets.Dataset, tuple[int | float, ...]]:
    """The examples the clients share out, and their labels (read once per process, not once per round)."""
    return _pool(cfg.task, tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir, cfg.validation_samples,
                 cfg.max_train_samples, cfg.data_seed)


@lru_cache(maxsize=4)
def _pool(task: str, tokenizer, pooling: str, max_length: int, glue_dir: str | None, validation_samples: int,
          max_train_samples: int, data_seed: int) -> tuple[datasets.Dataset, tuple[int | float, ...]]:
    full = data.load_tokenized(task, "train", tokenizer, pooling, max_length, glue_dir)
    if validation_samples:
        full = full.select(data.validation_split(len(full), validation_samples)[1])
    pool = data.subset(full, max_train_samples or None, seed=data_seed)  # the centralized runs' subset at this seed
    return pool, tuple(np.asarray(pool.with_format("numpy")["label"]).tolist())


def validation_data(cfg: FedConfig, tokenizer) -> datasets.Dataset:
    """The training examples held out by validation-samples: where settings are chosen instead of on dev."""
    full = data.load_tokenized(cfg.task, "train", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)
    return full.select(data.validation_split(len(full), cfg.validation_samples)[0])


@lru_cache(maxsize=4)
def _partitions(task: str, labels: tuple, num_partitions: int, scheme: str, alpha: float,
                seed: int, min_size: int) -> tuple[np.ndarray, ...]:
    """Every client's indices, cached on disk: each deployed message runs in a fresh process."""
    definition = glue.get_task(task)
    bins = partition_labels(labels, definition.is_regression, definition.score_binning)

    def build() -> dict[str, np.ndarray]:
        parts = partition(bins, num_partitions, scheme, alpha, seed, min_size)
        return {str(i): np.asarray(p, dtype=np.int64) for i, p in enumerate(parts)}

    name = cache.key(PARTITION_CACHE_VERSION, version("flwr-datasets"), task, num_partitions, scheme, alpha, seed,
                     min_size, cache.digest({"labels": np.asarray(bins)}))
    arrays = cache.load_or_build("partitions", name, build)
    return tuple(arrays[str(i)] for i in range(num_partitions))


def client_indices(cfg: FedConfig, labels: list, partition_id: int, num_partitions: int) -> np.ndarray:
    if not 0 <= partition_id < num_partitions:
        raise LocalDataError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")
    parts = _partitions(cfg.task, tuple(labels), num_partitions, cfg.partition_scheme, cfg.alpha, cfg.data_seed,
                        cfg.min_partition_size)
    return parts[partition_id]


def warm_caches(cfg: FedConfig, num_partitions: int) -> None:
    """Tokenize the splits and draw the partitions into the on-disk caches, so that clients only read them."""
    check_run_max_length(cfg)  # before the backbone loads, and before any client starts
    tokenizer = load_backbone(cfg.model or None).tokenizer
    _, labels = _pool_train(cfg, tokenizer)
    client_indices(cfg, labels, 0, num_partitions)
    data.load_tokenized(cfg.task, "dev", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)


def client_train_data(cfg: FedConfig, tokenizer, partition_id: int, num_partitions: int) -> datasets.Dataset:
    """This client's share of the training set, capped at max-train-samples-per-client."""
    pool, labels = _pool_train(cfg, tokenizer)
    idx = client_indices(cfg, labels, partition_id, num_partitions)
    part = pool.select(idx)
    return data.subset(part, cfg.max_train_samples_per_client or None, seed=cfg.data_seed)


def client_eval_data(cfg: FedConfig, tokenizer, partition_id: int, num_partitions: int) -> datasets.Dataset:
    """This client's share of the dev set (or of the held-out training examples), split like the training set."""
    if cfg.validation_samples:  # tuning runs never look at dev, on the server or on a client
        dev = validation_data(cfg, tokenizer)
    else:
        dev = data.load_tokenized(cfg.task, "dev", tokenizer, cfg.pooling, cfg.max_length, cfg.glue_dir)
    return dev.select(client_indices(cfg, dev["label"], partition_id, num_partitions))


def local_data_file(path: str, task: glue.Task, tokenizer, cfg: FedConfig) -> datasets.Dataset:
    """A deployed node's own examples, in any format a task's files take (CSV, TSV, JSON Lines, Parquet), read
    and checked as a task's files are (fedrp.tasks): a GLUE task's in columns text, [pair,] label, a user's
    task in its own columns."""
    p = Path(path)
    if not p.is_file():
        raise LocalDataError(f"no local data file at {p}: expected a CSV, TSV, JSON Lines or Parquet file with "
                             f"the task's columns")
    if p.suffix.lower() not in tasks.FORMATS:
        raise LocalDataError(f"local data file {p} must end in one of {sorted(tasks.FORMATS)}")
    if task.data is None:  # GLUE's official column names are its TSVs'; a device file names them plainly
        task = dataclasses.replace(task, text="text", pair=None if task.pair is None else "pair", label="label")
    try:
        ds = tasks.read_file(task, p)
    except ValueError as err:
        raise LocalDataError(str(err)) from None
    return data.tokenize(ds, tokenizer, cfg.pooling, cfg.max_length)
