"""The project's import graph read from source, and the layer rules of ARCHITECTURE.md checked on it.

Every `import` counts wherever it is written — at module level, inside a function (a lazy
import still runs), or under `TYPE_CHECKING` — because each one is a dependency someone
reading the code has to follow. Pure apart from reading files, so the rules themselves
are tested on small made-up graphs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "serving")


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` (both dotted module names) at `line`."""

    source: str
    target: str
    line: int


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, generated code left out (it is not written by hand)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "_generated" in path.parts:
                continue
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
              known: Mapping[str, Path]) -> list[str]:
    """The project modules one import statement names (the longest known prefix of each)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" for alias in node.names]
    found = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_edges(files: Mapping[str, Path]) -> list[Edge]:
    """Every import between project modules (self-imports and `__future__` left out)."""
    edges = set()
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _imported(module, path.name == "__init__.py", node, files):
                    if target != module and not module.startswith(target + "."):
                        edges.add(Edge(module, target, node.lineno))
    return sorted(edges, key=lambda e: (e.source, e.target, e.line))


def parse_layers(text: str) -> list[list[str]]:
    """The ```layers block of ARCHITECTURE.md: one layer per line, top first; `#` starts a comment."""
    match = re.search(r"```layers\n(.*?)```", text, re.S)
    if match is None:
        raise ValueError("ARCHITECTURE.md has no ```layers block")
    layers = []
    for line in match.group(1).splitlines():
        names = line.split("#", 1)[0].split()
        if names:
            layers.append(names)
    return layers


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """Index of the layer whose most specific entry is a prefix of `module` (0 = top).

    An entry `=name` is that one module only (a package's `__init__`, not what is under it).
    """
    best: tuple[int, int] | None = None
    for index, names in enumerate(layers):
        for entry in names:
            exact = entry.startswith("=")
            name = entry.lstrip("=")
            if module == name or (not exact and module.startswith(name + ".")):
                if best is None or len(name) > best[1]:
                    best = (index, len(name))
    return None if best is None else best[0]


def upward(edges: Iterable[Edge], layers: list[list[str]]) -> list[Edge]:
    """Imports from a lower layer to a higher one (a module may use its own layer and those below)."""
    out = []
    for edge in edges:
        source, target = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if source is not None and target is not None and target < source:
            out.append(edge)
    return out


def unplaced(modules: Iterable[str], layers: list[list[str]]) -> list[str]:
    """Modules no layer names: a new top-level module must be given its place."""
    return sorted(m for m in modules if layer_of(m, layers) is None)


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
