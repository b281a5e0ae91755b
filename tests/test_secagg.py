"""Secure aggregation (SecAgg+): the masked sum equals the plain weighted mean within the quantisation step."""

import numpy as np
import pytest

from fedrp.federation import FedConfig, client_train_data, initial_state, local_train, model_for
from fedrp.privacy.client_level import ClientLevelDP
from fedrp.secagg import SecAggConfig, client_update, server_state
from server import checkpoint
from server.store import RunStore
from tests.test_federation import simulate


def _states():
    sent = {"z": np.zeros(4, np.float32), "head.weight": np.ones((2, 3), np.float32)}
    state = {"z": np.array([3.0, 4.0, 0.0, 0.0], np.float32), "head.weight": np.ones((2, 3), np.float32)}
    return sent, state


def test_client_update_sends_the_update_in_key_order_with_a_capped_weight():
    sent, state = _states()
    arrays, weight = client_update(sent, state, 5000, SecAggConfig(max_weight=200), None)
    assert [a.shape for a in arrays] == [(2, 3), (4,)]  # sorted: head.weight, z
    np.testing.assert_array_equal(arrays[1], [3, 4, 0, 0])
    assert weight == 200.0


def test_client_level_dp_clips_on_the_device_and_weighs_clients_equally():
    sent, state = _states()
    arrays, weight = client_update(sent, state, 80, SecAggConfig(), ClientLevelDP(1.0, 0.5, 1e-5))
    assert weight == 1.0
    assert np.sqrt(sum(float(np.sum(a**2)) for a in arrays)) == pytest.approx(0.5)


def test_a_non_finite_update_is_refused_before_it_can_spoil_the_sum():
    sent, state = _states()
    state["z"][1] = np.nan
    with pytest.raises(ValueError, match="non-finite values in \\['z'\\]"):
        client_update(sent, state, 10, SecAggConfig(), None)


def test_server_state_rescales_to_the_sampled_count_and_adds_noise_of_sigma_c_over_m():
    sent = {"z": np.zeros(20000, np.float32)}
    mean = [np.full(20000, 0.3)]
    dp = ClientLevelDP(noise_multiplier=2.0, clip=1.0, delta=1e-5)
    out = server_state(sent, mean, survivors=3, num_sampled=4, client_dp=dp, rng=np.random.default_rng(0))
    assert out["z"].dtype == np.float32
    assert np.mean(out["z"]) == pytest.approx(0.3 * 3 / 4, abs=0.01)
    assert np.std(out["z"]) == pytest.approx(2.0 * 1.0 / 4, rel=0.03)
    plain = server_state(sent, mean, 3, 4, None, np.random.default_rng(0))
    np.testing.assert_allclose(plain["z"], 0.3, rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(aggregation="median"), "needs aggregation fedavg"),
    (dict(norm_bound=5.0), "norm-bound 0"),
    (dict(min_train_nodes=1), "min-train-nodes of at least 2"),
    (dict(secagg_quantization=2**30), "secagg-quantization"),
    (dict(secagg_clip=0.0), "secagg-clip must be positive"),
])
def test_settings_secure_aggregation_cannot_honour_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        FedConfig(secure_aggregation="secagg+", **bad)


@pytest.mark.slow
def test_secagg_round_equals_the_weighted_mean_of_the_surviving_clients(tmp_path, glue_dir):
    """Four clients through SecAgg+, one of which crashes after the key exchange: the server
    still unmasks the other three, and the new state is their example-weighted mean update."""
    args = ["--num-server-rounds", "1", "--fraction-train", "1.0", "--fraction-evaluate", "0",
            "--secure-aggregation", "secagg+", "--faulty-clients", "3:error"]
    out = simulate(tmp_path, glue_dir, *args, supernodes=4)
    assert out["status"] == "completed"
    assert [(r["accepted"], r["refused"]) for r in out["rounds"][1:]] == [(3, 1)]
    assert out["rounds"][1]["bytes_up"] == 3 * 14360  # int64 per coordinate (z, head) plus the weight
    assert [(r["partition_id"], r["reason"]) for r in out["refusals"]] == [(3, "client-error")]
    assert "injected client failure" in out["refusals"][0]["detail"]
    accepted = RunStore(out["store"]).replies(out["run_id"], "accepted")
    assert {r["partition_id"] for r in accepted} == {0, 1, 2}
    weights = {r["partition_id"]: r["metrics"]["num-examples"] for r in accepted}  # each at most max-weight 80

    # The same three clients' rounds, replayed in this process without any masking.
    cfg = FedConfig(task="sst2", data_dir=str(glue_dir), max_train_samples=480, max_train_samples_per_client=80,
                    bf16="off", fraction_train=1.0, local_optimizer="adamw", lr=0.01, batch_size=32,
                    lr_decay="none")  # as SMALL
    start = initial_state(cfg)
    tokenizer = model_for(cfg).tokenizer
    updates = [{k: v - start[k] for k, v in local_train(cfg, start, client_train_data(cfg, tokenizer, pid, 4), 1,
                                                          pid)[0].items()} for pid in range(3)]
    w = [weights[pid] for pid in range(3)]
    expected = {k: start[k] + np.average([u[k] for u in updates], axis=0, weights=w) for k in start}
    _, got, _, _ = checkpoint.load(str(tmp_path / "ckpt" / f"run-{out['run_id']}"))
    step = SecAggConfig(max_weight=80).step(min(w))  # 2 * 8 / 2^22 * 80 / w per coordinate
    for k in start:
        moved = np.max(np.abs(expected[k] - start[k]))
        assert moved > 1000 * step, k  # the round moved the state far more than the tolerance below
        np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=3 * step + 1e-6, err_msg=k)
