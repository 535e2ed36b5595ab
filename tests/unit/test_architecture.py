"""The import graph keeps the layers of ARCHITECTURE.md: nothing imports upward, no cycles."""

from __future__ import annotations

from pathlib import Path

from tests.support.import_rules import (
    ROOT,
    Edge,
    cycles,
    import_edges,
    layer_of,
    module_files,
    parse_layers,
    unplaced,
    upward,
)

LAYERS = parse_layers((ROOT / "ARCHITECTURE.md").read_text())


def test_no_module_imports_a_higher_layer():
    edges = import_edges(module_files())
    bad = [f"{e.source} -> {e.target} (line {e.line})" for e in upward(edges, LAYERS)]
    assert bad == []


def test_import_graph_has_no_cycles():
    assert cycles(import_edges(module_files())) == []


def test_every_module_has_a_layer():
    assert unplaced(module_files(), LAYERS) == []


def test_lazy_and_type_checking_imports_count(tmp_path: Path):
    pkg = tmp_path / "pipeline"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "high.py").write_text("import pipeline.low.a\n")
    (pkg / "low" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline import high\n"
        "def f():\n    from ..high import x\n")
    edges = import_edges(module_files(tmp_path, ["pipeline"]))
    layers = [["pipeline.high"], ["pipeline.low", "=pipeline"]]
    assert [(e.source, e.target, e.line) for e in upward(edges, layers)] == [
        ("pipeline.low.a", "pipeline.high", 3), ("pipeline.low.a", "pipeline.high", 5)]
    assert cycles(edges) == [["pipeline.high", "pipeline.low.a"]]


def test_layer_of_takes_the_most_specific_entry_and_exact_entries():
    layers = [["pipeline.stages"], ["pipeline.stages.pure"], ["=pipeline"]]
    assert layer_of("pipeline.stages.export", layers) == 0
    assert layer_of("pipeline.stages.pure.x", layers) == 1
    assert layer_of("pipeline", layers) == 2
    assert layer_of("pipeline.newmodule", layers) is None


def test_cycles_finds_each_group_once():
    edges = [Edge("a", "b", 1), Edge("b", "a", 1), Edge("b", "c", 1), Edge("c", "d", 1), Edge("d", "c", 2)]
    assert cycles(edges) == [["a", "b"], ["c", "d"]]
