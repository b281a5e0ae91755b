"""The version of the code that decides a cell's numbers, for benchmark cache keys.

A cached cell is reused only while the code its numbers come from is unchanged: the project
modules its entry points import (followed through every import statement, also those inside
functions), compared as syntax trees without docstrings, so a reworded comment or docstring
keeps the cells while any change to what runs makes them stale. A centralized reference
depends on the training code and the command line's defaults; a federated cell also on the apps
and the round loop; both on the grid that picks their data and condenses what they report. The
installed versions of the libraries that compute a number are part of the version too.
The version of a past commit is read from git, by that commit's own rule (this module as it was
then), so a results page keeps naming the cells its pinned commit ran.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import subprocess
import types
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedrp", "clients", "server", "simulations")  # the project's own top-level packages
# What each kind of cell runs: `fedrp train` (its defaults set a reference's batch size, warmup and schedule)
# for a reference, `simulations.run` for a federation; and the grid, which writes a cell's data (QNLI's split)
# and condenses its result into the cached numbers (simulations.harness.cells).
ENTRY_POINTS = {
    "reference": ("fedrp.cli", "fedrp.centralized"),
    "federated": ("simulations.run", "simulations.inprocess", "clients.client_app", "server.server_app"),
}
HARNESS = ("simulations.harness.grid",)
# Imported by the entry points, but they only show, store or ship results, never compute them.
NOT_RESULT_CODE = {"fedrp.export", "fedrp.predict", "fedrp.artifact", "server.dashboard"}
# Installed distributions whose code computes a cell's numbers: the backbone's layers, LoRA, DP-SGD,
# the federation, GLUE's reader and the partitioner.
LIBRARIES = ("torch", "transformers", "peft", "opacus", "flwr", "datasets", "flwr-datasets")
# This module, where it is now and where earlier commits held it: a commit's version is computed by its own copy.
RULES = ("simulations/harness/code_version.py", "simulations/code_version.py")


@cache
def code_version(kind: str = "federated", commit: str | None = None) -> str:
    """sha256 (16 hex digits) over the module names and docstring-free syntax trees a kind of cell runs,
    in the working tree or, given a commit, in that commit, and the installed library versions."""
    if commit is not None and _rule_differs(commit):
        return _rule_of(commit).code_version(kind, commit)
    digest = hashlib.sha256()
    for name, form in sorted(result_forms(kind, commit).items()):
        digest.update(name.encode() + b"\0" + form.encode() + b"\0")
    for name, version in library_versions().items():
        digest.update(f"{name}=={version}".encode() + b"\0")
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """The public version of each library in LIBRARIES ('2.13.0' for torch 2.13.0+cpu: the same release keys
    alike on a CPU and a GPU build), 'absent' where one is not installed."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _rule_differs(commit: str) -> bool:
    """Whether the commit computed versions by another rule than this module's (a rule change re-keys
    every later cell, but must not orphan the cells a pinned commit ran)."""
    rule = _rule_path(commit)
    return rule is not None and _normalized(_committed_text(ROOT, commit, rule)) != _normalized(Path(__file__).read_text())


def _rule_path(commit: str) -> str | None:
    """Where the commit holds this module, if it has one (raises ValueError for a commit not in the history)."""
    files = _committed_files(ROOT, commit)
    return next((path for path in RULES if path in files), None)


@cache
def _rule_of(commit: str) -> types.ModuleType:
    """The commit's own copy of this module, loaded from git; it reads the commit's sources itself."""
    module = types.ModuleType(f"simulations.harness.code_version@{commit[:12]}")
    module.__file__ = __file__  # its ROOT is this checkout's
    rule = _rule_path(commit)
    source = compile(_committed_text(ROOT, commit, rule), f"{commit[:12]}:{rule}", "exec")
    exec(source, module.__dict__)  # noqa: S102 - this repository's own module, as git stores it at that commit
    module.ROOT = ROOT
    module._rule_differs = lambda commit: False  # within the commit's own rule, the commit is never another rule's
    return module


def changed_modules(kind: str, commit: str) -> list[str]:
    """The result modules of a kind whose code differs between a commit and the working tree (added or gone too)."""
    then, now = result_forms(kind, commit), result_forms(kind)
    return sorted(name for name in then.keys() | now.keys() if then.get(name) != now.get(name))


def result_forms(kind: str, commit: str | None = None) -> dict[str, str]:
    """Each result module of a kind, by name, as the docstring-free form that its version hashes."""
    tree = _Tree(commit)
    return {name: _normalized(tree.read(name)) for name in result_modules(kind, commit)}


def result_modules(kind: str, commit: str | None = None) -> set[str]:
    """The project modules reachable by imports from the kind's entry points, less NOT_RESULT_CODE, and the
    harness's own modules (not the library code they import: a cell reaches what it runs from its entry points)."""
    if kind not in ENTRY_POINTS:
        raise ValueError(f"cell kind must be one of {sorted(ENTRY_POINTS)}, got {kind!r}")
    tree = _Tree(commit)
    harness = {name for name in _reachable(HARNESS, tree) if name.split(".")[0] == "simulations"}
    return _reachable(ENTRY_POINTS[kind], tree) | harness


def _reachable(entry_points: tuple[str, ...], tree: _Tree) -> set[str]:
    seen: set[str] = set()
    todo = list(entry_points)
    while todo:
        name = todo.pop()
        if name in seen or _excluded(name) or tree.path(name) is None:
            continue
        seen.add(name)
        todo += _imports(name, tree)
    return seen


def _excluded(name: str) -> bool:
    return any(name == x or name.startswith(x + ".") for x in NOT_RESULT_CODE)


class _Tree:
    """The project's source files: the working tree under ROOT, or a commit's as git stores them."""

    def __init__(self, commit: str | None = None) -> None:
        self.commit = commit
        self.files = _committed_files(ROOT, commit) if commit else None

    def path(self, name: str) -> str | None:
        """The source file of a project module or package (relative to ROOT), None outside the project."""
        if name.split(".")[0] not in PACKAGES:
            return None
        base = "/".join(name.split("."))
        for path in (base + ".py", base + "/__init__.py"):
            if (path in self.files) if self.files is not None else (ROOT / path).is_file():
                return path
        return None

    def read(self, name: str) -> str:
        path = self.path(name)
        return _committed_text(ROOT, self.commit, path) if self.commit else (ROOT / path).read_text()


@cache
def _committed_files(root: Path, commit: str) -> frozenset[str]:
    try:
        listing = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", commit],
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise ValueError(f"commit {commit!r} is not in the git history at {root}: expected a commit of this "
                         f"repository (a full clone, not a shallow one)") from None
    return frozenset(listing.splitlines())


@cache
def _committed_text(root: Path, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"],
                          capture_output=True, text=True, check=True).stdout


def _imports(name: str, tree: _Tree) -> list[str]:
    """Every module an import statement of this module names (and the packages on the way)."""
    package = name if tree.path(name).endswith("__init__.py") else name.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(ast.parse(tree.read(name))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pkg import module`
        else:
            continue
        for target in targets:
            parts = target.split(".")
            out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return out


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _normalized(source: str) -> str:
    """The module's syntax tree without docstrings or positions: what it does, not how it is worded."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return _dump(tree)


def _dump(node) -> str:
    """ast.dump without the fields that are empty or None. Python versions add fields (3.12 gave every
    def and class `type_params=[]`), so ast.dump spells the same code differently from one Python
    to the next; this form is the same under 3.11, 3.12 and 3.13, and a cell run elsewhere (a GPU
    machine's Python) keys as the code it ran."""
    if isinstance(node, ast.AST):
        fields = ((k, getattr(node, k, None)) for k in node._fields)
        return f"{type(node).__name__}({','.join(f'{k}={_dump(v)}' for k, v in fields if v is not None and v != [])})"
    if isinstance(node, list):
        return f"[{','.join(_dump(x) for x in node)}]"
    return repr(node)
