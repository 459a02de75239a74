"""The project's own import graph, read from the source (every import, at module top or inside a function).

Used by tests/test_structure.py and scripts/sync_dvc_deps.py.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from dmdlib import provenance

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dmdlib", "dmd")


@dataclass(frozen=True)
class Import:
    source: str  # the importing file, relative to the repository root
    target: str  # the imported project file
    line: int
    top_level: bool  # at module top (not inside a function or class body)


def module_file(module: str) -> str | None:
    """'dmdlib.denoisers.base' -> 'dmdlib/denoisers/base.py' (or a package's __init__.py); None if not the project's."""
    path = provenance.module_file(module, PACKAGES)
    return None if path is None else str(path.resolve().relative_to(ROOT))


def imports_of(path: Path) -> list[Import]:
    """Every project import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    source = str(path.relative_to(ROOT))
    top = {id(node) for node in tree.body}
    found = []
    for node, name in provenance.imported_modules(tree):
        target = module_file(name)
        if target is not None and target != source:
            found.append(Import(source, target, node.lineno, id(node) in top))
    return found


def project_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def graph(own_packages: bool = True) -> dict[str, set[str]]:
    """file -> the project files it imports; without `own_packages`, leaving out the __init__.py of the packages
    the file itself is in (Python runs those first whatever the file imports, so they make no cycle)."""
    edges = {}
    for path in project_files():
        source = path.relative_to(ROOT)
        ancestors = {str(parent / "__init__.py") for parent in source.parents}
        edges[str(source)] = {i.target for i in imports_of(path) if own_packages or i.target not in ancestors}
    return edges


CLI = "dmd/cli.py"  # what `dmd <name>` runs before the stage module


def stage_module(command: str) -> str | None:
    """'dmd teacher --params ...' (a pipeline's cmd line) -> 'dmd/stages/teacher.py'; None for any other line."""
    match = re.match(r"\s*(?:cmd:\s*)?dmd ([a-z_]+)\b", command)
    return module_file(f"dmd.stages.{match.group(1)}") if match else None


def stage_code(stage_file: str, edges: dict[str, set[str]]) -> set[str]:
    """The project files a stage runs: the `dmd` command's and its stage module's, with all they import."""
    return closure(CLI, edges) | closure(stage_file, edges)


def closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    """`start` and every project file it imports, directly or indirectly."""
    seen, todo = {start}, [start]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of files that import each other (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


# Every DVC pipeline file whose stage deps must cover the code each stage runs (scripts/sync_dvc_deps.py rewrites them).
PIPELINE_FILES = ("dvc.yaml", "pipelines/templates/text-to-image.yaml", "pipelines/templates/class-conditional.yaml")


def compact(files: set[str]) -> list[str]:
    """Files as DVC deps, one by one: a stage re-runs when a file it imports changes, and only then."""
    return sorted(files)
