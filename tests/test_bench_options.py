"""What every benchmark's JSON says of its machine: a timing taken while other work ran is marked as such."""

import json

from simulations import bench_options


def test_a_benchmark_records_whether_the_machine_was_idle_when_it_started(monkeypatch):
    monkeypatch.setattr(bench_options.os, "getloadavg", lambda: (1.9, 1.2, 0.8))  # another job on the cores
    busy = bench_options.machine()
    assert busy["idle_at_start"] is False and busy["load_average_at_start"] == [1.9, 1.2, 0.8]
    monkeypatch.setattr(bench_options.os, "getloadavg", lambda: (0.05, 0.2, 0.3))
    idle = bench_options.machine()
    assert idle["idle_at_start"] is True and idle["cpu_count"] >= 1 and idle["cpu_model"]
    json.dumps(idle)  # it goes into the benchmark's JSON as is
