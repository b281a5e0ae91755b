"""The version of the code that decides a cell's numbers, for benchmark cache keys.

A cached cell is reused only while the code its numbers come from is unchanged: the project
modules its entry points import (followed through every import statement, also those inside
functions), compared as syntax trees without docstrings, so a reworded comment or docstring
keeps the cells while any change to what runs makes them stale. A centralized reference
depends on the training code only; a federated cell also on the apps and the round loop.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedrp", "clients", "server", "simulations")  # the project's own top-level packages
# What each kind of cell runs: `fedrp train` for a reference, `simulations.run` for a federation.
ENTRY_POINTS = {
    "reference": ("fedrp.centralized",),
    "federated": ("simulations.run", "simulations.inprocess", "clients.client_app", "server.server_app"),
}
# Imported by the entry points, but they only show, store or ship results, never compute them.
NOT_RESULT_CODE = {"fedrp.cli", "fedrp.export", "fedrp.predict", "fedrp.artifact", "server.dashboard"}


@cache
def code_version(kind: str = "federated") -> str:
    """sha256 (16 hex digits) over the module names and docstring-free syntax trees a kind of cell runs."""
    digest = hashlib.sha256()
    for name in sorted(result_modules(kind)):
        digest.update(name.encode() + b"\0" + _normalized(_path(name)).encode() + b"\0")
    return digest.hexdigest()[:16]


def result_modules(kind: str) -> set[str]:
    """The project modules reachable by imports from the kind's entry points, less NOT_RESULT_CODE."""
    if kind not in ENTRY_POINTS:
        raise ValueError(f"cell kind must be one of {sorted(ENTRY_POINTS)}, got {kind!r}")
    seen: set[str] = set()
    todo = list(ENTRY_POINTS[kind])
    while todo:
        name = todo.pop()
        if name in seen or _excluded(name) or _path(name) is None:
            continue
        seen.add(name)
        todo += _imports(name)
    return seen


def _excluded(name: str) -> bool:
    return any(name == x or name.startswith(x + ".") for x in NOT_RESULT_CODE)


def _path(name: str) -> Path | None:
    """The source file of a project module or package, None for anything outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(name: str) -> list[str]:
    """Every module an import statement of this module names (and the packages on the way)."""
    path = _path(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
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


def _normalized(path: Path) -> str:
    """The module's syntax tree without docstrings or positions: what it does, not how it is worded."""
    tree = ast.parse(path.read_text())
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
