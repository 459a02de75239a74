"""Which code made an output: the digest of a module and every module of its packages it imports, read from source.

A checkpoint or shard that records this digest is not reused after a change to the code that shapes it (a resumed
run would otherwise write the old result again). Docstrings, comments and layout do not count: they change no output.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path


def imported_modules(tree: ast.Module) -> Iterator[tuple[ast.stmt, str]]:
    """(import statement, module name) for every absolute import in `tree`, at any depth; a package's submodules
    named by `from package import name` and the packages above each module (whose __init__ runs too) included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                yield node, ".".join(parts[:depth])


@cache
def _package_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # a top-level package: found without being imported
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def module_file(module: str, packages: tuple[str, ...]) -> Path | None:
    """The source file of `module` (a package's __init__.py) if it belongs to one of `packages`, else None."""
    top, *rest = module.split(".")
    folder = _package_folder(top) if top in packages else None
    if folder is None:
        return None
    path = folder.joinpath(*rest)
    candidates = [path.with_suffix(".py")] if rest else []
    return next((p for p in [*candidates, path / "__init__.py"] if p.is_file()), None)


def _code_text(tree: ast.Module) -> str:
    """A syntax tree without its docstrings: what the file does, not how it is written or explained."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def code_digest(module: str, packages: tuple[str, ...]) -> str:
    """SHA-256 of `module`'s code and of every module of `packages` it imports, directly or not, by module name (so
    it does not depend on where the files are)."""
    trees, todo = {}, [module]
    while todo:
        name = todo.pop()
        path = module_file(name, packages)
        if path is None:
            raise ValueError(f"{name}: no source file found in packages {packages}")
        trees[name] = ast.parse(path.read_text(), filename=str(path))
        for _, imported in imported_modules(trees[name]):
            if imported not in trees and imported not in todo and module_file(imported, packages) is not None:
                todo.append(imported)
    digest = hashlib.sha256()
    for name in sorted(trees):
        digest.update(f"{name}\0{_code_text(trees[name])}\0".encode())
    return digest.hexdigest()
