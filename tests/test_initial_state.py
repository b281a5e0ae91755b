"""The global state a federation starts from: the same in every process, whatever ran there before.

The server makes it once and sends it, so a resumed or restarted server, a second server and a rerun of a
grid cell must all make the very same one. z and an adapter's head come from the projection's own
counter-based bits (fedrp.projection): their bytes are fixed here. A baseline's head and LoRA's A come
from torch's generators, seeded: they are compared across processes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from fedrp.federation import FedConfig
from fedrp.federation.model import initial_state

ROOT = Path(__file__).resolve().parents[1]
# sha256 (16 hex digits) over the sorted names and bytes of FedConfig(method=...)'s initial state on the
# default backbone, and z's first values: bit for bit what every earlier run started from.
GOLDEN_ADAPTER = "017a352b295b6f24"
GOLDEN_Z = [-0.02365971, -0.02427721, -0.05275917]


def digest(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + b"\0" + np.ascontiguousarray(state[k]).tobytes())
    return h.hexdigest()[:16]


def test_an_adapters_initial_z_and_head_are_the_golden_ones():
    for method in ("slash", "jrwarp"):  # the same z and head: only where z W_l enters differs
        state = initial_state(FedConfig(method=method))
        assert sorted(state) == ["head.bias", "head.weight", "z"]
        np.testing.assert_allclose(state["z"][:3], GOLDEN_Z, rtol=1e-6)
        assert digest(state) == GOLDEN_ADAPTER, method


def test_a_baselines_initial_state_is_the_same_in_a_fresh_process():
    """LoRA's A and the head are drawn from seeded generators, not from whatever torch's global generator
    holds: this process's generator is moved first, the other process starts fresh."""
    methods = ("lora", "head", "slash")
    code = ("import sys; sys.path.insert(0, 'tests'); from test_initial_state import digest;"
            "from fedrp.federation import FedConfig; from fedrp.federation.model import initial_state;"
            f"print(' '.join(digest(initial_state(FedConfig(method=m))) for m in {methods!r}))")
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    torch.manual_seed(12345)
    torch.rand(7)
    here = [digest(initial_state(FedConfig(method=m))) for m in methods]
    assert other.stdout.split() == here


def test_a_data_seed_draws_the_head_and_loras_a_anew_and_keeps_the_projections():
    """Replicates start from their own head (and LoRA's A, B still zero), with z and the projections kept."""
    for method in ("slash", "lora", "head"):
        base = initial_state(FedConfig(method=method))
        one, again = (initial_state(FedConfig(method=method, data_seed=1)) for _ in range(2))
        assert digest(one) == digest(again), method  # the seed decides it, not the process's history
        assert not np.array_equal(one["head.weight"], base["head.weight"]), method
        assert abs(float(one["head.weight"].std()) - float(base["head.weight"].std())) < 0.004  # the same N(0, 0.02)
        changed = {k for k in base if not np.array_equal(base[k], one[k])}
        if method == "slash":
            assert changed == {"head.weight"}  # z stays the projection seed's
        if method == "lora":
            a = {k for k in base if "lora_A" in k}
            assert a and a <= changed and not {k for k in changed if "lora_B" in k}
            assert all(not one[k].any() for k in base if "lora_B" in k)  # the start is still the backbone


def test_the_federated_pool_and_the_centralized_subset_follow_the_data_seed_together(glue_dir, default_tokenizer):
    from fedrp import data
    from fedrp.federation.clientdata import _pool_train

    full = data.load_tokenized("sst2", "train", default_tokenizer, "mask", 128, str(glue_dir))
    pools = {}
    for seed in (0, 1):
        cfg = FedConfig(task="sst2", max_train_samples=500, data_seed=seed, data_dir=str(glue_dir))
        pool, _ = _pool_train(cfg, default_tokenizer)
        pools[seed] = pool["input_ids"]
        assert pools[seed] == data.subset(full, 500, seed=seed)["input_ids"]  # what `fedrp train` takes at the seed
    assert pools[0] != pools[1]
