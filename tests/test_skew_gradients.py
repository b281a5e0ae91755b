"""simulations.skew_gradients: a one-class client's gradient under the logit-adjusted loss is almost nothing,
where plain cross-entropy's pushes everything to its class; clipping each client's step turns the federation's
mean away from its full-batch gradient."""

from simulations import skew_gradients


def test_a_one_class_clients_adjusted_gradient_is_a_small_part_of_plain_cross_entropys(glue_dir, capsys):
    out = skew_gradients.main(["--task", "sst2", "--alpha", "0.01", "--clients", "4", "--max-train-samples", "80",
                               "--validation-samples", "8", "--data-dir", str(glue_dir)])
    assert sum(sum(c["counts"]) for c in out["clients"]) == 80  # the training examples, the held-out 8 apart
    pure = [c for c in out["clients"] if min(c["counts"]) == 0]
    assert pure, out["clients"]  # alpha 0.01: two of the four clients hold one class
    for c in pure:
        assert c["logit-adjusted"]["majority"] < 0.2 * c["ce"]["majority"]  # about 0.1 with 20 examples and c["ce"]["others"] == 0.0
    assert -1.0 <= out["federation"]["cosine"] <= 1.0 and '"federation"' in capsys.readouterr().out


def test_clipped_client_steps_leave_the_federations_gradient_and_unclipped_ones_are_it(glue_dir):
    args = ["--task", "sst2", "--alpha", "0.01", "--clients", "4", "--max-train-samples", "80",
            "--validation-samples", "8", "--data-dir", str(glue_dir)]
    clipped = skew_gradients.main(args)["federation"]["clipped_ce_cosine"]
    assert clipped < 0.8  # 0.30: at norm 1 each client counts by its direction, not by its examples' gradients
    assert skew_gradients.main([*args, "--local-clip", "0"])["federation"]["clipped_ce_cosine"] > 0.9999
