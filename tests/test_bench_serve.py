"""simulations.bench_serve on a few tasks: it loads, measures and reports what its targets name."""

from simulations import bench_serve


def test_the_serving_benchmark_reports_load_memory_and_mixed_throughput(glue_dir, capsys):
    out = bench_serve.main(["--data-dir", str(glue_dir), "--tasks", "1", "3", "--batch", "6", "--repeats", "1",
                            "--clients", "1", "4", "--requests", "8"])
    assert out["bytes_per_task"] == {"vectors": 6 * 384 * 4, "head": (2 * 384 + 2) * 4}  # SLaSh's shifts, one per block
    assert set(out["mixed"]) == {1, 3} and all(m["examples_per_second"] > 0 for m in out["mixed"].values())
    assert out["load_seconds"][3] > 0 and out["met"]["memory"] is True and out["met"]["throughput"] is None
    assert set(out["latency"]) == {1, 4} and 0 < out["latency"][4]["p50_ms"] <= out["latency"][4]["p99_ms"]
    assert set(out["compute_ms"]) == {1, 4} and all(ms > 0 for ms in out["compute_ms"].values())
    assert '"single_task_examples_per_second"' in capsys.readouterr().out
    import torch

    assert torch.is_grad_enabled()  # in this process the tests after it still train
