"""Where a fine-tuned base can be cut so its frozen part runs once, not every epoch.

Fine-tuning trains only the top layers, yet a plain `fit()` runs the whole frozen
base forward on every step. If some tensor carries everything the top needs (every
path from the input to the output goes through it) and only frozen layers compute
it, its values can be computed once and the top trained on them. Residual blocks
make the answer non-obvious — inside a block two tensors are alive — so the cut is
found on the layer graph: the pure part works on integer ids, the Keras part only
translates a functional model into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One node of a graph in topological order: the tensors it reads and writes."""

    reads: tuple[int, ...]
    writes: tuple[int, ...]


def single_tensor_points(steps: Sequence[Step], outputs: Sequence[int]) -> dict[int, int]:
    """{step index: tensor} for every point after which exactly one tensor is still needed.

    A tensor is needed after step i while a later step reads it or it is an output.
    """
    last_use: dict[int, int] = {}
    for i, step in enumerate(steps):
        for t in step.reads:
            last_use[t] = i
    end = len(steps)
    for t in outputs:
        last_use[t] = end
    alive: set[int] = set()
    points: dict[int, int] = {}
    for i, step in enumerate(steps):
        alive.update(t for t in step.writes if last_use.get(t, -1) > i)
        alive.difference_update([t for t in alive if last_use.get(t, -1) <= i])
        if len(alive) == 1:
            points[i] = next(iter(alive))
    return points


def latest_cut_before(steps: Sequence[Step], outputs: Sequence[int], first_trained: int) -> int | None:
    """The tensor at the latest single-tensor point before step `first_trained`, or None
    when the only such point is the graph's input (nothing to save)."""
    points = single_tensor_points(steps, outputs)
    before = [i for i in points if 0 < i < first_trained]
    return points[max(before)] if before else None


def frozen_cut(model: Any, trained: set[str]) -> Any | None:
    """The KerasTensor of a functional `model` to cache below the `trained` layers, or None.

    None when the model is not a single-input functional graph, no layer is trained,
    or no tensor above the input separates the frozen part from the trained one.
    """
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if not nodes_by_depth or len(model.inputs) != 1 or not trained:
        return None
    nodes = [node for depth in sorted(nodes_by_depth, reverse=True) for node in nodes_by_depth[depth]]
    ids: dict[int, Any] = {}

    def key(tensor: Any) -> int:
        ids[id(tensor)] = tensor
        return id(tensor)

    steps = [Step(tuple(key(t) for t in node.input_tensors), tuple(key(t) for t in node.output_tensors))
             for node in nodes]
    names = [getattr(node.operation, "name", "") for node in nodes]
    first = next((i for i, name in enumerate(names) if name in trained), None)
    if first is None:
        return None
    cut = latest_cut_before(steps, [key(t) for t in model.outputs], first)
    return ids[cut] if cut is not None else None
