"""serving/agent/ runs alone inside the replicas: every import in it is the standard library or the
package itself (one named exception, function-local: serve mode's gRPC status call)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from tests.support.import_rules import ROOT

AGENT_DIR = ROOT / "serving" / "agent"
PACKAGE = "serving.agent"
# (module, top-level import) allowed outside the standard library, and only inside a function:
# serve mode asks its own server over gRPC (our serving image has grpcio); see serving/agent/__init__.py
ALLOWED_LAZY = {("serving.agent.status", "grpc")}


def foreign_imports(package_dir: Path, package: str) -> list[tuple[str, int, str, bool]]:
    """(module, line, what, inside a function) of every import that is neither the standard library
    nor `package` itself: `from .x import y` (level 1) stays in the package, level 2+ leaves it."""
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("").parts
        module = ".".join((package, *rel[:-1]) if rel[-1] == "__init__" else (package, *rel))
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    continue
                names = [f"{'.' * node.level}{node.module or ''}"]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if name.startswith(".") or (top not in sys.stdlib_module_names
                                            and name != package and not name.startswith(package + ".")):
                    out.append((module, node.lineno, name, id(node) in in_function))
    return out


def test_the_agent_imports_only_the_standard_library_and_itself():
    found = foreign_imports(AGENT_DIR, PACKAGE)
    bad = [f"{m}:{line} imports {name}" for m, line, name, lazy in found
           if not (lazy and (m, name.split(".")[0]) in ALLOWED_LAZY)]
    assert bad == []
    assert {(m, name) for m, _, name, _ in found} <= ALLOWED_LAZY  # no exception left unused silently


def test_the_check_catches_third_party_pipeline_and_parent_imports(tmp_path: Path):
    (tmp_path / "__init__.py").write_text("import json\nfrom . import sibling\nfrom .sibling import x\n")
    (tmp_path / "sibling.py").write_text(
        "import os.path\nimport numpy\nfrom pipeline.errors import E\nfrom .. import tfs_config\n"
        "from serving.agent.common import A\nfrom serving.client import C\n"
        "def f():\n    import grpc\n")
    assert foreign_imports(tmp_path, "serving.agent") == [
        ("serving.agent.sibling", 2, "numpy", False), ("serving.agent.sibling", 3, "pipeline.errors", False),
        ("serving.agent.sibling", 4, "..", False), ("serving.agent.sibling", 6, "serving.client", False),
        ("serving.agent.sibling", 8, "grpc", True)]
