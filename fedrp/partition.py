"""Non-IID partitions of a training set over clients, deterministic by seed.

The IID, size and pathological schemes use flwr-datasets' partitioners; Dirichlet label skew
is our own FedLab-style sampler (see `_inner_dirichlet` for why). This module adds what a
federation needs on top: a seeded shuffle where the partitioner has none, label bins for
regression tasks, and a check that every example lands in exactly one client.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import datasets
import numpy as np

SCHEMES = ("iid", "dirichlet", "quantity", "pathological")
STSB_BINS = 5  # scores 0..5 binned as [0,1), [1,2), [2,3), [3,4), [4,5]


def check_options(scheme: str, alpha: float, min_size: int,
                  names: tuple[str, str, str] = ("scheme", "alpha", "min-size")) -> None:
    """A split's options, checked before any data is read: `fedrp partition`, the federated run config and
    partition() all call this one check. `names`: how the caller spells scheme, alpha and min-size."""
    scheme_name, alpha_name, size_name = names
    if scheme not in SCHEMES:
        raise ValueError(f"{scheme_name} must be one of {list(SCHEMES)}, got {scheme!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{alpha_name} must be a positive number (a finite Dirichlet concentration), got {alpha!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise ValueError(f"{size_name} must be an integer of at least 1, got {min_size!r}")


SCORE_BINNINGS = ("fixed", "quantile")


def partition_labels(labels: Sequence, regression: bool = False, binning: str = "fixed") -> np.ndarray:
    """Labels to partition by: class ids, or a regression task's scores in STSB_BINS bins: STS-B's unit steps
    of its 0..5 scale ("fixed"), or, for a scale the code cannot know (a user's task), bins of equal counts."""
    values = np.asarray(labels)
    if not regression:
        return values.astype(int)
    values = values.astype(float)
    if binning == "quantile":
        edges = np.quantile(values, np.arange(1, STSB_BINS) / STSB_BINS)
        return np.searchsorted(edges, values, side="right").astype(int)
    if binning != "fixed":
        raise ValueError(f"score binning must be one of {SCORE_BINNINGS}, got {binning!r}")
    return np.clip(np.floor(values), 0, STSB_BINS - 1).astype(int)


def _sizes_by_dirichlet(n: int, num_clients: int, alpha: float, min_size: int, rng: np.random.Generator) -> list[int]:
    """Quantity skew: client shares ~ Dirichlet(alpha), each at least min_size."""
    spare = n - min_size * num_clients
    shares = rng.dirichlet([alpha] * num_clients)
    extra = np.floor(shares * spare).astype(int)
    extra[: spare - extra.sum()] += 1  # hand out the remainder so sizes sum to n
    return [int(min_size + e) for e in extra]


def _balanced_sizes(n: int, num_clients: int) -> np.ndarray:
    """n // K each, the remainder one each to the first clients: every client >= min_size when K * min_size <= n."""
    sizes = np.full(num_clients, n // num_clients, dtype=np.int64)
    sizes[: n % num_clients] += 1
    return sizes


def _log_dirichlet(alpha: float, num_clients: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Log-weights of each client's label mix ~ Dirichlet(alpha), unnormalized.

    Drawn in log space (log Gamma(alpha) = log Gamma(alpha + 1) + log(U) / alpha) because at
    alpha 0.01 a plain Dirichlet draw underflows to exact zeros, and a mix renormalized over the
    classes left would then be 0 / 0.
    """
    u = 1.0 - rng.random((num_clients, num_classes))  # in (0, 1]: log is finite
    return np.log(rng.gamma(alpha + 1.0, size=(num_clients, num_classes))) + np.log(u) / alpha


def _inner_dirichlet(classes: np.ndarray, sizes: np.ndarray, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """FedLab/FedNLP inner-Dirichlet label skew: fixed client sizes, each client's mix ~ Dirichlet(alpha).

    Clients take their turns in a random order (a shuffled list of every client's slots, where
    FedLab picks a random unfilled client each step); at each turn a client draws a class from
    its mix renormalized over the classes not yet used up, and gets the next (shuffled) example
    of that class. Every example lands in exactly one client and every client gets exactly its
    size. Draws are made for all remaining turns at once and cut where a class first runs out,
    so there is one pass per exhausted class instead of one Python step per example.

    Not flwr-datasets' InnerDirichletPartitioner (0.6), which implements the same sampler: its
    Dirichlet draws underflow to exact zeros at small alpha, so when a client's only class runs
    out its renormalized mix is 0 / 0 and it fails with "Probabilities contain NaN" (44 of 60
    runs at alpha 0.01 over CoLA, STS-B, WNLI and MRPC, 2 to 100 clients, 5 seeds; also SST-2
    over 100 clients at seed 0), and its per-example Python loop takes about 4 s on SST-2.
    """
    num_classes = int(classes.max()) + 1
    log_mix = _log_dirichlet(alpha, len(sizes), num_classes, rng)
    pools = [rng.permutation(np.flatnonzero(classes == c)) for c in range(num_classes)]
    left = np.array([len(p) for p in pools])
    turns = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    drawn = np.empty(len(turns), dtype=np.int64)
    done = 0
    while done < len(turns):
        alive = np.flatnonzero(left > 0)
        w = np.exp(log_mix[:, alive] - log_mix[:, alive].max(1, keepdims=True))  # softmax: never all zero
        cdf = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
        u = rng.random(len(turns) - done)
        pick = alive[np.minimum((u[:, None] >= cdf[turns[done:]]).sum(1), len(alive) - 1)]
        # Keep the draws up to the first that asks for more of a class than is left.
        cut = min(np.searchsorted(np.cumsum(pick == c), left[c] + 1) for c in alive)
        drawn[done: done + cut] = pick[:cut]
        left -= np.bincount(pick[:cut], minlength=num_classes)
        done += cut
    order = np.empty(len(turns), dtype=np.int64)  # the example each turn gets
    for c in range(num_classes):
        at = drawn == c
        order[at] = pools[c][: at.sum()]
    return [order[turns == k] for k in range(len(sizes))]


def _make(scheme: str, num_clients: int, alpha: float, seed: int, min_size: int, classes_per_client: int, n: int):
    # Imported here: flwr_datasets brings its plotting stack (matplotlib, seaborn, scipy), seconds of start-up
    # that a client reading its partition from the cache never needs.
    from flwr_datasets import partitioner as fp

    if scheme == "iid":
        return fp.IidPartitioner(num_partitions=num_clients), True
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
    check_options(scheme, alpha, min_size)
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if min_size * num_clients > n:
        raise ValueError(f"{n} examples cannot give {num_clients} clients at least {min_size} each")
    if scheme == "dirichlet":
        classes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)  # ids 0..C-1, none empty
        clients = _inner_dirichlet(classes, _balanced_sizes(n, num_clients), alpha, np.random.default_rng(seed))
        _check(clients, n, min_size, scheme)
        return clients
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


def mean_label_entropy(labels: Sequence, clients: list[np.ndarray]) -> float:
    """Mean over clients of the entropy (bits) of each client's label mix: lower is more skewed."""
    values = np.asarray(labels)
    counts = np.array(label_counts(values, clients, int(values.max()) + 1), dtype=float)
    mixes = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    terms = np.where(mixes > 0, -mixes * np.log2(np.where(mixes > 0, mixes, 1)), 0.0)
    return float(terms.sum(1).mean())
