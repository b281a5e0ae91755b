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


def test_a_benchmarks_json_names_the_commit_and_says_when_tracked_files_differ(tmp_path, monkeypatch, capsys):
    import subprocess

    root = tmp_path / "repo"
    (root / "simulations").mkdir(parents=True)
    (root / "simulations" / "bench_options.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setattr(bench_options, "__file__", str(root / "simulations" / "bench_options.py"))
    out = bench_options.report({"rate": 1.0}, {"cpu_count": 2})
    assert out == {"rate": 1.0, "machine": {"cpu_count": 2}, "commit": head}
    assert json.loads(capsys.readouterr().out) == out
    (root / "simulations" / "bench_options.py").write_text("x = 2\n")
    assert bench_options.commit() == head + "+changes"
