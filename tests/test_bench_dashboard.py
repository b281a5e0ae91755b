"""simulations.bench_dashboard's store: written as a large run writes it, and what issue 40's columns add."""

from server.store import RunStore
from simulations import bench_dashboard


def test_the_benchmarks_store_holds_both_runs_and_measures_the_added_columns(tmp_path):
    path = tmp_path / "big.sqlite"
    assert bench_dashboard.write_store(path, clients=6, rounds=3) == 18
    store = RunStore.open_readonly(path)
    replies = store.replies(1)
    assert len(replies) == 18 and all(r["norm_vector"] is not None and r["weight"] == 1 / 6 for r in replies)
    assert len(store.label_counts(2)) == 6
    assert bench_dashboard.added_bytes_per_reply(path, 18) > 0  # the target is the benchmark's, at 3,000 replies
