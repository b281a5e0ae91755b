"""simulations.bench_eval_prior refuses what it must not re-evaluate, in one line and before loading a model."""

import pytest

from fedrp.federation import FedConfig
from server.store import RunStore
from simulations import bench_eval_prior


def test_refuses_a_missing_store_and_a_run_evaluated_on_dev(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_eval_prior.main(["--store", str(tmp_path / "none.sqlite"), "--run", "1"])
    assert exit_info.value.code == 2
    assert "no run store at" in capsys.readouterr().err
    store = RunStore(tmp_path / "store.sqlite")
    for held_out in (0, 1000):
        config = FedConfig(task="stsb" if held_out else "sst2", validation_samples=held_out).to_run_config()
        store.start_run(config["task"], "slash", "minilm", config, None, None, 20, None)
    for run, line in ((1, "evaluated on dev (validation-samples 0): expected a tuning run"),
                      (2, "stsb is a regression task: it has no label prior")):
        with pytest.raises(SystemExit) as exit_info:
            bench_eval_prior.main(["--store", str(tmp_path / "store.sqlite"), "--run", str(run)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and line in err[0], err
