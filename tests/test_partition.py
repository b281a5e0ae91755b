"""Partitions: disjoint, complete, deterministic by seed, and as skewed as alpha says."""

import numpy as np
import pytest

from fedrp import glue
from fedrp.partition import SCHEMES, label_counts, partition, partition_labels


@pytest.fixture(scope="module")
def sst2_labels(glue_dir):
    return partition_labels(glue.load_split("sst2", "train", glue_dir)["label"])


def _skew(labels, clients, num_classes=2) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    overall = np.bincount(labels, minlength=num_classes) / len(labels)
    counts = np.array(label_counts(labels, clients, num_classes), dtype=float)
    mixes = counts / counts.sum(1, keepdims=True)
    return float(np.abs(mixes - overall).sum(1).mean() / 2)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_complete_and_deterministic(sst2_labels, scheme):
    labels = sst2_labels[:6000]
    clients = partition(labels, 10, scheme, alpha=0.5, seed=3, min_size=5)
    every = np.concatenate(clients)
    assert len(clients) == 10
    assert len(every) == len(labels) == len(np.unique(every))  # each example in exactly one client
    assert min(len(c) for c in clients) >= 5
    again = partition(labels, 10, scheme, alpha=0.5, seed=3, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(clients, again))
    other = partition(labels, 10, scheme, alpha=0.5, seed=4, min_size=5)
    assert any(not np.array_equal(a, b) for a, b in zip(clients, other))


def test_label_skew_grows_as_alpha_falls(sst2_labels):
    labels = sst2_labels[:20000]
    skews = [np.mean([_skew(labels, partition(labels, 10, "dirichlet", alpha=a, seed=s)) for s in range(3)])
             for a in (100.0, 1.0, 0.1)]
    assert skews[0] < 0.05 < skews[1] < skews[2]


def test_quantity_skews_sizes_not_labels(sst2_labels):
    labels = sst2_labels[:20000]
    clients = partition(labels, 10, "quantity", alpha=0.3, seed=0, min_size=20)
    sizes = sorted(len(c) for c in clients)
    assert sizes[-1] > 5 * sizes[0]
    assert _skew(labels, clients) < 0.08  # labels stay close to IID


def test_iid_is_balanced(sst2_labels):
    clients = partition(sst2_labels, 7, "iid", seed=0)
    sizes = [len(c) for c in clients]
    assert max(sizes) - min(sizes) <= 1
    assert _skew(sst2_labels, clients) < 0.02


def test_pathological_gives_each_client_its_classes(sst2_labels):
    labels = sst2_labels[:4000]
    counts = label_counts(labels, partition(labels, 4, "pathological", seed=0, classes_per_client=1), 2)
    assert all(sum(1 for c in row if c > 0) == 1 for row in counts)


def test_stsb_partitions_by_binned_score(glue_dir):
    scores = glue.load_split("stsb", "train", glue_dir)["label"]
    bins = partition_labels(scores, regression=True)
    assert set(np.unique(bins)) == {0, 1, 2, 3, 4}
    assert bins[np.asarray(scores) == 5.0].max() == 4
    clients = partition(bins, 5, "dirichlet", alpha=0.3, seed=0)
    assert sum(len(c) for c in clients) == len(scores)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scheme="shards"), "scheme must be one of"),
    (dict(num_clients=0), "num_clients must be at least 1"),
    (dict(min_size=1000), "cannot give 10 clients at least 1000"),
    (dict(alpha=0.0), "alpha must be positive"),
])
def test_bad_requests_are_refused(kwargs, message):
    labels = np.array([0, 1] * 50)
    with pytest.raises(ValueError, match=message):
        partition(labels, **{"num_clients": 10, **kwargs})
