"""Tensors in files for `predict` and `loadtest`: .npy / .npz / .json inputs in, outputs saved back.

JSON inputs are cast to the served dtypes (JSON has no float32); binary inputs are not,
so a dtype mismatch there is reported rather than hidden.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import VerifyError
from pipeline.verify.golden import load_golden
from serving.client import SignatureInfo
from serving.client._generated.tfrollout_wire_pb2 import DataType
from serving.client.codec import numpy_dtype


def read_inputs(path: Path, input_name: str | None) -> dict[str, Any]:
    """`.npy` (one input), `.npz` (names, `input.` prefix allowed), or JSON `{name: nested list}`."""
    if not path.is_file():
        raise VerifyError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {input_name or "": np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k.removeprefix("input."): data[k] for k in data.files if not k.startswith("output.")}
            return {input_name: next(iter(arrays.values()))} if input_name and len(arrays) == 1 else arrays
        if suffix == ".json":
            data = json.loads(path.read_text())
            data = data.get("inputs", data) if isinstance(data, dict) else data
            if isinstance(data, dict):
                return {k: np.asarray(v) for k, v in data.items()}
            return {input_name or "": np.asarray(data)}
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot read inputs from {path}: {exc}") from None
    raise VerifyError(f"input file {path}: expected .npy, .npz or .json")


def fit_to_signature(inputs: dict[str, Any], signature: SignatureInfo, *, cast: bool = False) -> dict[str, Any]:
    """Name an unnamed single input; with `cast`, convert (JSON-born) arrays to the served dtypes.

    Binary inputs (.npy/.npz) are not cast, so a dtype mismatch there is reported, not hidden.
    """
    inputs = dict(inputs)
    if "" in inputs:
        if len(signature.inputs) != 1:
            raise VerifyError(f"the signature takes {sorted(signature.inputs)}; name the input "
                              "with --input-name")
        inputs = {next(iter(signature.inputs)): inputs.pop(""), **inputs}
    if not cast:
        return inputs
    fitted = {}
    for name, value in inputs.items():
        spec = signature.inputs.get(name)
        array = np.asarray(value)
        if spec is not None and spec.dtype in DataType.keys() and array.dtype.kind in "fiub":
            target = numpy_dtype(DataType.Value(spec.dtype))
            if array.dtype != target and np.can_cast(array.dtype, target, casting="same_kind"):
                array = array.astype(target)
        fitted[name] = array
    return fitted


def jsonable(value: np.ndarray) -> Any:
    """Values as JSON can hold them (bytes as text)."""
    if value.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value.ravel().tolist()]
    return value.tolist()


def save_outputs(path: Path, outputs: dict[str, Any]) -> None:
    """.npz (every output, `output.` prefix), .npy (one output) or .json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, **{f"output.{k}": v for k, v in outputs.items()})
    elif suffix == ".npy":
        if len(outputs) != 1:
            raise VerifyError(f"--out {path}: .npy holds one output, got {sorted(outputs)}; use .npz")
        np.save(path, next(iter(outputs.values())))
    elif suffix == ".json":
        path.write_text(json.dumps({k: jsonable(v) for k, v in outputs.items()}))
    else:
        raise VerifyError(f"--out {path}: expected .npz, .npy or .json")


def load_test_inputs(path: Path | None, name: str | None, golden: Path | None, sig: SignatureInfo,
                     batch: int) -> dict[str, Any]:
    """Explicit file, else the golden inputs, else zeros shaped like the signature; `batch` rows."""
    if path is not None:
        inputs = fit_to_signature(read_inputs(path, name), sig, cast=path.suffix.lower() == ".json")
    elif golden is not None and golden.is_file():
        inputs = load_golden(golden).inputs
    else:
        inputs = {}
        for key, spec in sig.inputs.items():
            shape = [1 if d < 0 else d for d in (spec.shape or ())]
            inputs[key] = np.zeros(shape, dtype=numpy_dtype(DataType.Value(spec.dtype)))
    out = {}
    for key, value in inputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] == 0:
            out[key] = value
            continue
        reps = -(-batch // value.shape[0])
        out[key] = np.concatenate([value] * reps)[:batch]
    return out
