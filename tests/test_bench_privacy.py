"""The centralized DP comparison chooses each method's schedule on held-out training examples and
reports dev once per epsilon at that one schedule (no model is trained here: the runs are stood in for)."""

import json

from simulations import bench_privacy


def test_schedules_are_chosen_on_validation_and_every_epsilon_runs_the_chosen_one_on_dev(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(method, epsilon, data_dir, bf16, lr, max_grad_norm=1.0, batch_size=32, epochs=1.0, validation_samples=0):
        calls.append((method, epsilon, lr, max_grad_norm, batch_size, epochs, validation_samples))
        # On validation the largest rate and batch win under DP and the smallest rate without; on dev the
        # opposite would, so a dev-chosen pick shows.
        if validation_samples:
            score = lr * batch_size * max_grad_norm if epsilon else batch_size / lr
        else:
            score = 1 / (lr * batch_size)
        return {"setting": "centralized", "method": method, "epsilon_target": epsilon, "accuracy": score,
                "samples_per_second": 1.0, "lr": lr, "batch_size": batch_size, "epochs": epochs,
                "max_grad_norm": max_grad_norm if epsilon else None}

    monkeypatch.setattr(bench_privacy, "centralized", fake)
    bench_privacy.main(["--no-federated", "--cache", str(tmp_path / "cache.jsonl"), "--data-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    selection = [c for c in calls if c[-1]]
    dev = [c for c in calls if not c[-1]]
    assert len(selection) == sum(len(v) for v in bench_privacy.CANDIDATES.values()) + sum(
        len(v) for v in bench_privacy.NONPRIVATE_CANDIDATES.values())
    assert all(c[1] in (bench_privacy.CHOSEN_AT, 0.0) and c[-1] == bench_privacy.VALIDATION for c in selection)
    assert sorted((c[0], c[1]) for c in dev) == sorted([(m, e) for m in bench_privacy.METHODS
                                                        for e in bench_privacy.EPSILONS] +
                                                       [(m, 0.0) for m in bench_privacy.METHODS])  # dev once each
    for method, (low_lr, top_lr) in bench_privacy.TRIED_RATES.items():
        runs = [c for c in dev if c[0] == method]
        assert {(c[2], c[4], c[5]) for c in runs} == {(top_lr, 128, 3.0), (low_lr, 128, 3.0)}
        assert {(c[2], c[4], c[5]) for c in runs if c[1]} == {(top_lr, 128, 3.0)}  # one schedule for every epsilon
        assert {c[3] for c in runs if c[1]} == {1.0}  # the chosen clipping norm under DP
        assert out["summary"][f"{method}_nonprivate_own_schedule"] == {"lr": low_lr, "batch_size": 128, "epochs": 3.0}
    assert out["summary"]["slash_schedule"]["lr"] == 1e-1
    own, private = out["summary"]["slash_nonprivate_own_schedule_dev"], out["summary"]["slash_eps8_dev"]
    assert out["summary"]["slash_eps8_points_below_nonprivate"] == 100 * (own - private)  # against its own schedule
    assert set(out["summary"]) >= {"slash_eps8_points_below_nonprivate_same_schedule", "slash_eps8_ahead_of_lora_eps8",
                                   "slash_eps3_ahead_of_lora_eps3"}

    calls.clear()  # a second invocation finds every cell in the cache
    bench_privacy.main(["--no-federated", "--cache", str(tmp_path / "cache.jsonl"), "--data-dir", str(tmp_path)])
    assert calls == []


def test_client_level_dp_chooses_its_clip_on_held_out_examples_and_runs_each_noise_once_on_dev(tmp_path, monkeypatch,
                                                                                             capsys):
    from simulations import bench_client_dp

    calls = []

    def fake(options: dict) -> dict:
        calls.append(options)
        held_out = options.get("validation-samples", 0)
        accuracy = options["client-dp-clip"] if held_out else 1 / options["client-dp-clip"]  # dev would pick the other
        rounds = [{"round": r, "metrics": {"accuracy": accuracy}, "bytes_up": 1, "bytes_up_accepted": 1, "accepted": 30,
                   "refused": 0,
                   "wall_seconds": 1.0} for r in (0, 1)]
        return {"status": "completed", "store": "s", "run_id": 1, "rounds": rounds, "final_metrics": {"accuracy": accuracy},
                "client_dp_epsilon": options["client-dp-noise"] and 1 / options["client-dp-noise"]}

    monkeypatch.setattr(bench_client_dp, "run_federation", fake)
    monkeypatch.chdir(tmp_path)
    bench_client_dp.main(["--cache", str(tmp_path / "cells.jsonl"), "--data-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    selection, dev = calls[:len(bench_client_dp.CLIPS)], calls[len(bench_client_dp.CLIPS):]
    assert all(c["validation-samples"] == 400 and c["client-dp-noise"] == bench_client_dp.SELECT_NOISE for c in selection)
    assert out["clip"] == max(bench_client_dp.CLIPS)
    assert [c["client-dp-noise"] for c in dev] == list(bench_client_dp.NOISES)
    assert all("validation-samples" not in c and c["client-dp-clip"] == out["clip"] for c in dev)
    assert all(c["num-supernodes"] == 100 and c["fraction-train"] == 0.3 for c in calls)
