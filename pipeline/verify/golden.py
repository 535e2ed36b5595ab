"""The golden set: `input.<name>` and `output.<name>` arrays in one .npz next to the export,
plus `label` (the examples' true classes) when the export knew them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import VerifyError

GOLDEN_FILE = Path("assets.extra") / "tfrollout_golden.npz"


@dataclass(frozen=True)
class Golden:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    path: Path
    labels: np.ndarray | None = None

    @property
    def examples(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def batches(self, size: int) -> list[tuple[slice, dict[str, np.ndarray]]]:
        """Split the inputs along the first axis into requests of at most `size` examples."""
        n = self.examples
        return [(slice(i, min(i + size, n)), {k: v[i:i + size] for k, v in self.inputs.items()})
                for i in range(0, n, max(1, size))]


def load_golden(path: Path) -> Golden:
    """Read and sanity-check a golden .npz (one line naming the file on any problem)."""
    path = Path(path)
    if path.is_dir():
        path = path / GOLDEN_FILE
    if not path.is_file():
        raise VerifyError(f"golden set not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise VerifyError(f"golden set {path}: unreadable ({exc})") from None
    inputs = {k[len("input."):]: v for k, v in arrays.items() if k.startswith("input.")}
    outputs = {k[len("output."):]: v for k, v in arrays.items() if k.startswith("output.")}
    if not inputs or not outputs:
        raise VerifyError(f"golden set {path}: needs arrays named input.<name> and output.<name>, "
                          f"found {sorted(arrays)}")
    sizes = {v.shape[0] if v.ndim else -1 for v in (*inputs.values(), *outputs.values())}
    if len(sizes) != 1 or -1 in sizes:
        raise VerifyError(f"golden set {path}: arrays disagree on the number of examples ({sorted(sizes)})")
    labels = arrays.get("label")
    if labels is not None and labels.shape != (next(iter(sizes)),):
        raise VerifyError(f"golden set {path}: label has shape {labels.shape}, expected one per example")
    return Golden(inputs, outputs, path, labels)


def non_finite_outputs(golden: Golden, allowed: frozenset[str] | set[str]) -> dict[str, int]:
    """Golden outputs (not opted in) holding NaN/Inf, with how many such values each (pure)."""
    counts = {}
    for name, values in golden.outputs.items():
        if name in allowed or not np.issubdtype(values.dtype, np.number):
            continue
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            counts[name] = bad
    return counts


def refuse_non_finite_golden(version_dir: Path, allowed: list[str]) -> None:
    """Fail closed at the earliest point: a version whose golden outputs hold NaN/Inf would make
    verify compare NaN with NaN. A version without a golden set has nothing to check here
    (verify then refuses it for want of one)."""
    path = Path(version_dir) / GOLDEN_FILE
    if not path.is_file():
        return
    golden = load_golden(path)
    bad = non_finite_outputs(golden, set(allowed))
    if bad:
        shown = ", ".join(f"{name!r} ({n} of {golden.outputs[name].size} values)" for name, n in sorted(bad.items()))
        raise VerifyError(f"refusing to publish {version_dir}: its golden outputs hold NaN/Inf: {shown}; a "
                          "model that answers NaN cannot be verified (set verify.allow_non_finite to the "
                          "output's name if it is meant to)")
