"""Partitions: disjoint, complete, deterministic by seed, and as skewed as alpha says."""

import itertools
import re

import numpy as np
import pytest

from fedrp import glue
from fedrp.partition import SCHEMES, label_counts, mean_label_entropy, partition, partition_labels

TASKS = ("sst2", "cola", "mrpc", "stsb", "rte", "wnli")  # every GLUE task with a train.tsv in shared/glue
ALPHAS = (0.01, 0.1, 1.0, 100.0)
CLIENTS = (2, 10, 100)


@pytest.fixture(scope="module")
def task_labels(glue_dir):
    """Each task's training labels as partitioned (STS-B binned), loaded once for the module."""
    return {t: partition_labels(glue.load_split(t, "train", glue_dir)["label"], glue.get_task(t).is_regression)
            for t in TASKS}


@pytest.fixture(scope="module")
def sst2_labels(task_labels):
    return task_labels["sst2"]


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


@pytest.mark.filterwarnings("error")  # flwr-datasets' inner Dirichlet warned (0 / 0) before it failed here
@pytest.mark.parametrize("num_clients", CLIENTS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("task", TASKS)
def test_dirichlet_places_every_example_once_at_any_alpha(task_labels, task, alpha, num_clients):
    labels = task_labels[task]
    n = len(labels)
    min_size = n // num_clients  # the largest minimum that can be met
    clients = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=1, min_size=min_size)
    assert len(clients) == num_clients and all(c.dtype == np.int64 for c in clients)
    assert np.array_equal(np.sort(np.concatenate(clients)), np.arange(n))  # each example exactly once
    sizes = [len(c) for c in clients]
    assert min(sizes) >= min_size and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("num_clients", CLIENTS)
@pytest.mark.parametrize("task", TASKS)
def test_dirichlet_is_deterministic_by_seed(task_labels, task, num_clients):
    labels = task_labels[task]
    for alpha in (0.01, 1.0):
        first = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=7)
        again = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=7)
        other = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=8)
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("num_clients", CLIENTS)
@pytest.mark.parametrize("task", TASKS)
def test_label_skew_grows_as_alpha_falls(task_labels, task, num_clients):
    """Mean per-client label entropy falls strictly over alpha 100 > 1 > 0.1 > 0.01.

    Two clients need more seeds: whether both draw the same majority class swings a seed's
    entropy by about 0.3 bits, against a gap of 0.06 to 0.2 bits between alpha 0.1 and 0.01.
    """
    labels = task_labels[task]
    seeds = range(20 if num_clients == 2 else 5)
    entropy = [np.mean([mean_label_entropy(labels, partition(labels, num_clients, "dirichlet", alpha=a, seed=s))
                        for s in seeds]) for a in sorted(ALPHAS, reverse=True)]
    assert all(hi > lo for hi, lo in itertools.pairwise(entropy)), entropy
    iid = mean_label_entropy(labels, partition(labels, num_clients, "iid", seed=0))
    assert entropy[0] > 0.95 * iid  # alpha 100 is close to IID at the same client sizes


def test_dirichlet_refuses_only_the_impossible(task_labels):
    labels = task_labels["wnli"]  # 635 examples
    with pytest.raises(ValueError, match="635 examples cannot give 100 clients at least 7 each"):
        partition(labels, 100, "dirichlet", alpha=0.01, min_size=7)
    exact = partition(labels[:600], 100, "dirichlet", alpha=0.01, seed=0, min_size=6)  # min_size * clients == n
    assert [len(c) for c in exact] == [6] * 100


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
    (dict(alpha=0.0), "alpha must be a positive number"),
])
def test_bad_requests_are_refused(kwargs, message):
    labels = np.array([0, 1] * 50)
    with pytest.raises(ValueError, match=message):
        partition(labels, **{"num_clients": 10, **kwargs})


# Each bad value, refused by the one check that `fedrp partition`, the run config and partition() share.
BAD_OPTIONS = [
    ("alpha", float("nan"), r"alpha must be a positive number \(a finite Dirichlet concentration\), got nan"),
    ("alpha", float("inf"), r"alpha must be a positive number \(a finite Dirichlet concentration\), got inf"),
    ("alpha", -0.5, "alpha must be a positive number"),
    ("min_size", -5, "must be an integer of at least 1, got -5"),
    ("min_size", 0, "must be an integer of at least 1, got 0"),
    ("scheme", "shards", r"must be one of \['iid', 'dirichlet', 'quantity', 'pathological'\], got 'shards'"),
]


@pytest.mark.parametrize("option, value, message", BAD_OPTIONS)
def test_bad_options_are_refused_by_partition(option, value, message):
    with pytest.raises(ValueError, match=message):
        partition(np.array([0, 1] * 50), 2, **{"scheme": "quantity", option: value})


@pytest.mark.parametrize("option, value, message", BAD_OPTIONS)
def test_bad_options_are_refused_by_the_run_config(option, value, message):
    from fedrp.federation import FedConfig

    key = {"alpha": "alpha", "min_size": "min-partition-size", "scheme": "partition-scheme"}[option]
    with pytest.raises(ValueError, match=message) as refused:
        FedConfig.from_run_config({}, {key: value})
    assert str(refused.value).startswith(f"{key} must ")


@pytest.mark.parametrize("option, value, message", [b for b in BAD_OPTIONS if b[0] != "scheme"])  # argparse: choices
def test_bad_options_are_refused_by_the_command_before_reading_data(option, value, message, capsys, monkeypatch):
    from fedrp import glue
    from fedrp.cli import main

    def unread(*args, **kwargs):
        raise AssertionError("the training split was read before the bad option was refused")

    monkeypatch.setattr(glue, "load_split", unread)
    flag = {"alpha": "--alpha", "min_size": "--min-size"}[option]
    assert main(["partition", "--task", "sst2", "--num-clients", "3", flag, str(value)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"fedrp partition: error: {flag} must "), err
    assert re.search(message, err), err


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("num_clients", CLIENTS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("num_classes", [5, 40, 300])
def test_a_users_label_set_of_any_size_partitions_as_glues_do(num_classes, alpha, num_clients):
    """A user's task with 5 to 300 labels of uneven frequency (a support-ticket router's long tail): every
    example in exactly one client, every client at least min-size, the same partition for the same seed."""
    rng = np.random.default_rng(num_classes)
    labels = rng.choice(num_classes, size=6000, p=rng.dirichlet(np.ones(num_classes)))
    min_size = len(labels) // num_clients // 2
    clients = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=1, min_size=min_size)
    every = np.concatenate(clients)
    assert len(every) == len(labels) == len(np.unique(every)) and min(len(c) for c in clients) >= min_size
    again = partition(labels, num_clients, "dirichlet", alpha=alpha, seed=1, min_size=min_size)
    assert all(np.array_equal(a, b) for a, b in zip(clients, again, strict=True))


def test_a_users_regression_scores_are_binned_by_their_quantiles():
    """Scores on a scale of the user's (here 1 to 100, skewed): five bins of equal counts, so that label skew
    has five label groups to skew; STS-B keeps its unit steps of 0..5."""
    scores = np.random.default_rng(0).gamma(2.0, 10.0, size=1000) + 1
    bins = partition_labels(scores, regression=True, binning="quantile")
    assert np.bincount(bins).tolist() == [200] * 5
    assert np.all(np.diff(bins[np.argsort(scores)]) >= 0)  # ordered like the scores
    assert partition_labels([0.0, 1.5, 4.9, 5.0], regression=True).tolist() == [0, 1, 4, 4]
    with pytest.raises(ValueError, match="score binning must be one of"):
        partition_labels(scores, regression=True, binning="equal")
