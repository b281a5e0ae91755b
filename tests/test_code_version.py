"""Benchmark cache keys: a cell goes stale when the code it ran changes, and only then."""

import shutil

import pytest

from simulations import code_version as cv


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
    assert {"fedrp.centralized", "fedrp.train", "fedrp.adapters.slash", "fedrp.data"} <= reference
    assert "fedrp.federation" not in reference and "server.strategy" not in reference
    assert reference < federated
    assert {"fedrp.federation", "fedrp.partition", "server.rounds", "server.strategy", "clients.client_app",
            "simulations.inprocess"} <= federated
    assert not {"fedrp.cli", "fedrp.artifact", "simulations.grid"} & federated
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

    before_cli = versions()
    edit(project / "fedrp/cli.py", "import argparse", "import argparse as argparse_")
    assert versions() == before_cli  # the command line decides no number


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
