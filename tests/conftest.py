"""Shared fixtures: the real default backbone and tiny random encoders of every supported family."""

from __future__ import annotations

import os

import pytest
import torch
import transformers
from transformers import AutoModel

from fedrp.backbone import Backbone, freeze, load_backbone

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# The longest tests, mostly Flower's and Ray's processes at work; under `pytest -n N` they start first.
LONGEST_FIRST = ("test_dashboard.py", "test_engines.py", "test_inprocess.py", "test_ray_cluster.py", "test_signals.py")
# Modules whose module-scoped fixtures are costly (a federated run, a warm worker, tokenized data): their
# tests share one worker so that each fixture runs once. Every other test goes wherever a worker is free.
SHARED_FIXTURE_MODULES = {"test_bench_task_scale.py", "test_cli.py", "test_dashboard.py", "test_partition.py",
                          "test_predict_file.py", "test_privacy.py", "test_train.py", "test_warm_worker.py"}


def pytest_configure(config):
    """Under `pytest -n N`, each worker's torch (and its subprocesses') gets its share of the cores:
    two workers of two threads each on two cores spin-wait on each other and run several times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Under `-n N`, work in large pieces first and in small ones last, so that the workers end together:
    the longest tests, then the modules of SHARED_FIXTURE_MODULES (one xdist group each), then every other
    test on its own (pyproject's --no-loadscope-reorder keeps this order; xdist would put the groups of most
    tests first).

    Two Rays may run side by side: each local Ray is a fresh one (simulations.run asks for address
    "local", Flower's SuperLink finds no /tmp/ray/ray_current_cluster), and the `ray start` cluster of
    test_ray_cluster writes its address only into its own temp dir."""
    def rank(item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (name not in SHARED_FIXTURE_MODULES)

    items.sort(key=rank)  # stable: within a rank, collection order
    for item in items:
        if item.path.name in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.name))


_TINY = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, vocab_size=30522, type_vocab_size=2)

TINY_CONFIGS = {
    "bert": lambda: transformers.BertConfig(hidden_size=32, **_TINY),
    "roberta": lambda: transformers.RobertaConfig(hidden_size=32, **_TINY),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(hidden_size=32, **_TINY),
    "electra": lambda: transformers.ElectraConfig(hidden_size=32, embedding_size=16, **_TINY),
    "deberta-v2": lambda: transformers.DebertaV2Config(hidden_size=32, relative_attention=True, pos_att_type=["p2c", "c2p"], **_TINY),
    "distilbert": lambda: transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=48, vocab_size=30522),
}


@pytest.fixture(scope="session")
def default_tokenizer():
    return load_backbone().tokenizer


@pytest.fixture
def default_backbone() -> Backbone:
    """A fresh copy of the real all-MiniLM-L6-v2 each time (loading takes a fraction of a second)."""
    return load_backbone()


@pytest.fixture
def tiny_backbone(default_tokenizer):
    """Factory: a tiny randomly initialised encoder of a family, sharing the MiniLM tokenizer."""

    def make(family: str, seed: int = 0) -> Backbone:
        torch.manual_seed(seed)
        model = freeze(AutoModel.from_config(TINY_CONFIGS[family]()))
        return Backbone(f"tiny-{family}", model, default_tokenizer)

    return make


TEXTS = ["a gripping, funny and moving film", "dull", "the plot is thin but the acting is terrific [MASK] indeed"]
PAIRS = ["it was good", "not at all", "yes"]


@pytest.fixture(scope="session", autouse=True)
def _fresh_token_cache(tmp_path_factory):
    """Tests build their own tokenization cache instead of reading a developer's: one per pytest run, shared by
    its xdist workers (the cache writes each file atomically), so SST-2's 67k rows are tokenized once, not per worker."""
    old = os.environ.get("FEDRP_CACHE")
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "fedrp-cache"
    folder.mkdir(exist_ok=True)
    os.environ["FEDRP_CACHE"] = str(folder)
    yield
    if old is None:
        os.environ.pop("FEDRP_CACHE", None)
    else:
        os.environ["FEDRP_CACHE"] = old


@pytest.fixture(scope="session")
def glue_dir():
    """The shared GLUE copy (official layout); its absence is an error, not a skip."""
    from pathlib import Path

    path = Path(os.environ.get("FEDRP_GLUE_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "glue")
    if not (path / "SST-2" / "dev.tsv").is_file():
        raise FileNotFoundError(f"tests need GLUE in the official layout at {path} (set FEDRP_GLUE_DIR)")
    return path


@pytest.fixture
def committed_project(tmp_path, monkeypatch):
    """A copy of the project's packages in a git repository of its own, its first commit made, that
    simulations.harness.code_version reads instead of the real tree: returns (folder, commit)."""
    import shutil
    import subprocess

    from simulations.harness import code_version as cv

    root = tmp_path / "project"
    for package in cv.PACKAGES:
        shutil.copytree(cv.ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "pinned"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.setattr(cv, "ROOT", root)
    cv.code_version.cache_clear()
    yield root, commit
    cv.code_version.cache_clear()


@pytest.fixture
def no_model(monkeypatch):
    """Loading a backbone or an export's weights fails the test: a refusal must come before that."""
    from fedrp import artifact, backbone, centralized, export

    def load(*args, **kwargs):
        raise AssertionError("the model loaded before the bad input was refused")

    for module in (artifact, backbone, centralized):
        monkeypatch.setattr(module, "load_backbone", load)
    monkeypatch.setattr(export, "load_exported", load)
