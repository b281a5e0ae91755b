"""Benchmark cache keys: a cell goes stale when the code it ran changes, and only then."""

import shutil

import pytest

from simulations.harness import code_version as cv


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's packages that the tests may edit; code_version reads it instead."""
    for package in cv.PACKAGES:
        shutil.copytree(cv.ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "ROOT", tmp_path)
    cv.code_version.cache_clear()
    yield tmp_path
    cv.code_version.cache_clear()


def versions() -> dict[str, str]:
    cv.code_version.cache_clear()
    return {kind: cv.code_version(kind) for kind in cv.ENTRY_POINTS}


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_each_kind_depends_on_the_modules_it_imports():
    reference, federated = cv.result_modules("reference"), cv.result_modules("federated")
    assert {"fedrp.centralized", "fedrp.train", "fedrp.methods.slash", "fedrp.data"} <= reference
    assert "fedrp.federation" not in reference and "server.strategy" not in reference
    assert reference < federated
    assert {"fedrp.federation", "fedrp.partition", "server.rounds", "server.strategy", "clients.client_app",
            "simulations.inprocess"} <= federated
    harness = {"simulations.harness.grid", "simulations.harness.grid_config", "simulations.harness.cells", "simulations.harness.qnli_split"}
    assert harness <= reference and harness <= federated
    assert "fedrp.cli" in reference  # its defaults set a reference's batch size, warmup and schedule
    assert not {"fedrp.artifact", "fedrp.export", "server.dashboard", "simulations.harness.results_page"} & federated
    with pytest.raises(ValueError, match="cell kind"):
        cv.result_modules("other")


def test_wording_keeps_the_version_and_behaviour_changes_it(project):
    base = versions()
    edit(project / "fedrp/train.py", "\nimport dataclasses\n", "\n# a comment\nimport dataclasses  # another\n")
    edit(project / "fedrp/federation/config.py", '"""The clients\' learning rate in a round', '"""Reworded: the rate')
    assert versions() == base

    edit(project / "fedrp/federation/config.py", "return cfg.learning_rate * 0.5 *", "return cfg.learning_rate * 0.6 *")
    after_federation = versions()
    assert after_federation["reference"] == base["reference"]  # the centralized runs never import it
    assert after_federation["federated"] != base["federated"]

    edit(project / "fedrp/train.py", "import math", "import math as math_")
    assert all(versions()[k] != after_federation[k] for k in cv.ENTRY_POINTS)


# Each input that decides a cached number, planted with a change: (file, old, new, the kinds whose key moves).
PLANTS = {
    "CLI default": ("fedrp/spec.py", "warmup_ratio: float = option(0.06,", "warmup_ratio: float = option(0.1,",
                    {"reference", "federated"}),  # `fedrp train`'s options (fedrp.spec.TrainOptions), which both import
    "CLI code": ("fedrp/cli.py", "def _option_type(", "CLI_RULE = 2\n\n\ndef _option_type(",
                 {"reference", "federated"}),  # simulations.run imports fedrp.cli too
    "QNLI split": ("simulations/harness/qnli_split.py", "def read_rows(", "SPLIT_RULE = 2\n\n\ndef read_rows(",
                   {"reference", "federated"}),
    "cell condensing": ("simulations/harness/cells.py", '"refused": sum(r["refused"] for r in rounds)',
                        '"refused": sum(r["refused"] for r in rounds[1:])', {"reference", "federated"}),
    "the grid": ("simulations/harness/grid.py", "def prune_checkpoints(", "GRID_RULE = 2\n\n\ndef prune_checkpoints(",
                 {"reference", "federated"}),
}


@pytest.mark.parametrize("plant", PLANTS)
def test_every_input_that_decides_a_result_moves_the_key(project, plant):
    path, old, new, kinds = PLANTS[plant]
    base = versions()
    edit(project / path, old, new)
    moved = {kind for kind, version in versions().items() if version != base[kind]}
    assert moved == kinds


def test_a_library_version_moves_the_key(monkeypatch):
    base = versions()
    real = cv.importlib.metadata.version
    monkeypatch.setattr(cv.importlib.metadata, "version", lambda name: "9.9.9" if name == "peft" else real(name))
    assert all(v != base[k] for k, v in versions().items())
    assert cv.library_versions()["peft"] == "9.9.9" and set(cv.library_versions()) == set(cv.LIBRARIES)


def test_every_library_in_the_key_is_pinned_by_the_constraints_the_install_uses():
    """A library in the key with an open range would re-key every cached cell on its next release."""
    pins = {}
    for line in (cv.ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert set(cv.LIBRARIES) <= set(pins)
    assert "-c constraints.txt" in (cv.ROOT / ".ci" / "run").read_text()


def test_the_form_hashed_is_the_same_under_every_python():
    """Python 3.12 added `type_params=[]` to every def and class in ast.dump: the hashed form leaves out
    empty and None fields, so a GPU machine's Python keys a cell as the code it ran."""
    import ast

    tree = ast.parse("class A:\n    def f(self, x: int = 1) -> None:\n        return None\n")
    form = cv._dump(tree)
    assert "type_params" not in form and "=[]" not in form and "=None" not in form
    assert "defaults=[Constant(value=1)]" in form and "Return(value=Constant())" in form  # `return None`
    assert cv._dump(ast.parse("def f():\n    return")) != cv._dump(ast.parse("def f():\n    return None"))
    assert cv._dump(ast.parse("def f(x=2): pass")) != cv._dump(ast.parse("def f(x): pass"))


def test_a_commits_version_is_read_from_git_and_the_changes_since_are_named(committed_project):
    root, commit = committed_project
    pinned = {kind: cv.code_version(kind, commit) for kind in cv.ENTRY_POINTS}
    assert versions() == pinned  # the tree is the commit
    edit(root / "fedrp/federation/config.py", '"""The clients\' learning rate in a round', '"""Reworded: the rate')
    assert all(cv.changed_modules(kind, commit) == [] for kind in cv.ENTRY_POINTS)

    edit(root / "fedrp/federation/config.py", "return cfg.learning_rate * 0.5 *", "return cfg.learning_rate * 0.6 *")
    (root / "fedrp/extra.py").write_text("X = 1\n")
    edit(root / "fedrp/train.py", "import math", "import math\nimport fedrp.extra")
    cv.code_version.cache_clear()
    assert {kind: cv.code_version(kind, commit) for kind in cv.ENTRY_POINTS} == pinned  # read from git, not the tree
    assert versions()["federated"] != pinned["federated"]
    assert cv.changed_modules("reference", commit) == ["fedrp.extra", "fedrp.train"]  # an added module counts
    assert cv.changed_modules("federated", commit) == ["fedrp.extra", "fedrp.federation.config", "fedrp.train"]
    with pytest.raises(ValueError, match="not in the git history"):
        cv.code_version("federated", "0" * 40)


def test_a_commit_is_versioned_by_its_own_rule(committed_project):
    """A commit whose code_version.py hashed other inputs keeps the version it gave its cells then."""
    import hashlib
    import subprocess

    root, _ = committed_project
    edit(root / "simulations/harness/code_version.py", "    for name, version in library_versions().items():",
         "    for name, version in {}.items():  # an older rule: no library versions")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "commit", "-qam", "older rule"], check=True)
    older = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    for kind in cv.ENTRY_POINTS:
        digest = hashlib.sha256()
        for name, form in sorted(cv.result_forms(kind, older).items()):
            digest.update(name.encode() + b"\0" + form.encode() + b"\0")
        assert cv.code_version(kind, older) == digest.hexdigest()[:16]  # the older rule's version
    cv.code_version.cache_clear()
    assert cv.code_version("federated", older) != cv.code_version("federated")  # this rule's differs


def test_the_pinned_grids_rows_are_found_under_their_commits_rule():
    """The page reads the pinned commit's cells by the versions that commit gave them."""
    import json

    from simulations.harness.grid import versions as grid_versions
    from simulations.harness.grid_config import DEFAULT_CONFIG, load_config

    grid = load_config(DEFAULT_CONFIG)
    if grid.commit is None:
        pytest.skip("simulations/harness/grid.toml pins no commit")
    cached = {json.loads(line)["key"] for line in (cv.ROOT / "docs/results/cells.jsonl").read_text().splitlines()}
    codes = {json.loads(key)["code"] for key in cached}
    assert set(grid_versions(grid).values()) <= codes
