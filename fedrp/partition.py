"""Non-IID partitions of a training set over clients, deterministic by seed.

The schemes use flwr-datasets' partitioners (IID, Dirichlet, pathological, size); this module
adds what a federation needs on top: a seeded shuffle where the partitioner has none, label
bins for regression tasks, and a check that every example lands in exactly one client.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
from flwr_datasets import partitioner as fp

SCHEMES = ("iid", "dirichlet", "quantity", "pathological")
STSB_BINS = 5  # scores 0..5 binned as [0,1), [1,2), [2,3), [3,4), [4,5]


def partition_labels(labels: Sequence, regression: bool = False) -> np.ndarray:
    """Labels to partition by: class ids, or binned scores for a regression task."""
    values = np.asarray(labels)
    if regression:
        return np.clip(np.floor(values.astype(float)), 0, STSB_BINS - 1).astype(int)
    return values.astype(int)


def _sizes_by_dirichlet(n: int, num_clients: int, alpha: float, min_size: int, rng: np.random.Generator) -> list[int]:
    """Quantity skew: client shares ~ Dirichlet(alpha), each at least min_size."""
    spare = n - min_size * num_clients
    shares = rng.dirichlet([alpha] * num_clients)
    extra = np.floor(shares * spare).astype(int)
    extra[: spare - extra.sum()] += 1  # hand out the remainder so sizes sum to n
    return [int(min_size + e) for e in extra]


def _make(scheme: str, num_clients: int, alpha: float, seed: int, min_size: int, classes_per_client: int, n: int):
    if scheme == "iid":
        return fp.IidPartitioner(num_partitions=num_clients), True
    if scheme == "dirichlet":
        return fp.DirichletPartitioner(
            num_partitions=num_clients, partition_by="label", alpha=alpha,
            min_partition_size=min_size, self_balancing=False, shuffle=True, seed=seed,
        ), False
    if scheme == "quantity":
        sizes = _sizes_by_dirichlet(n, num_clients, alpha, min_size, np.random.default_rng(seed))
        return fp.SizePartitioner(partition_sizes=sizes), True
    if scheme == "pathological":
        return fp.PathologicalPartitioner(
            num_partitions=num_clients, partition_by="label", num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic", shuffle=True, seed=seed,
        ), False
    raise ValueError(f"partition scheme must be one of {SCHEMES}, got {scheme!r}")


def partition(
    labels: Sequence,
    num_clients: int,
    scheme: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 1,
    classes_per_client: int = 1,
) -> list[np.ndarray]:
    """Indices of each client's examples; every index in exactly one client."""
    n = len(labels)
    if scheme not in SCHEMES:
        raise ValueError(f"partition scheme must be one of {SCHEMES}, got {scheme!r}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if min_size * num_clients > n:
        raise ValueError(f"{n} examples cannot give {num_clients} clients at least {min_size} each")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    table = datasets.Dataset.from_dict({"idx": np.arange(n), "label": np.asarray(labels)})
    part, needs_shuffle = _make(scheme, num_clients, alpha, seed, min_size, classes_per_client, n)
    # IID and size partitioners take contiguous slices: shuffle first so labels mix.
    part.dataset = table.shuffle(seed=seed) if needs_shuffle else table
    try:
        clients = [np.asarray(part.load_partition(i)["idx"], dtype=np.int64) for i in range(num_clients)]
    except ValueError as err:
        raise ValueError(f"cannot make a {scheme} partition of {n} examples over {num_clients} clients: {err}") from err
    _check(clients, n, min_size, scheme)
    return clients


def _check(clients: list[np.ndarray], n: int, min_size: int, scheme: str) -> None:
    every = np.concatenate(clients) if clients else np.array([], dtype=np.int64)
    if len(every) != n or len(np.unique(every)) != n:
        raise ValueError(
            f"the {scheme} partition covers {len(np.unique(every))} of {n} examples "
            f"({len(every) - len(np.unique(every))} repeated): every example must be in exactly one client; "
            "give pathological more classes per client or fewer clients"
        )
    small = min(len(c) for c in clients)
    if small < min_size:
        raise ValueError(f"the {scheme} partition gave a client {small} examples, fewer than the minimum {min_size}")


def label_counts(labels: Sequence, clients: list[np.ndarray], num_classes: int) -> list[list[int]]:
    values = np.asarray(labels)
    return [np.bincount(values[c], minlength=num_classes).tolist() for c in clients]
