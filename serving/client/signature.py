"""The served signature as plain data, and the pre-flight check of a request against it.

Checking inputs against GetModelMetadata before sending turns a server-side
"Expects arg[0] to be float but double is provided" into a message that names
the input, the expected dtype/shape and what was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.client import codec
from serving.client._generated import tfrollout_wire_pb2 as wire
from serving.client.errors import InputMismatchError, ModelNotFoundError


@dataclass(frozen=True)
class TensorSpec:
    """dtype name (e.g. DT_FLOAT) and shape (None = unknown rank, -1 = any size)."""

    dtype: str
    shape: tuple[int, ...] | None

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ",".join(str(d) for d in self.shape) + "]"
        return f"{self.dtype} {shape}"

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method,
                "inputs": {k: v.to_json() for k, v in self.inputs.items()},
                "outputs": {k: v.to_json() for k, v in self.outputs.items()}}


def _spec(info: wire.TensorSpec) -> TensorSpec:
    shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
    return TensorSpec(codec.dtype_name(info.dtype), shape)


def parse_metadata(response: wire.MetadataResponse) -> dict[str, SignatureInfo]:
    """All signatures in a GetModelMetadata response (the Any holds a SignatureDefMap)."""
    packed = response.metadata.get("signature_def")
    if packed is None:
        return {}
    sigmap = wire.SignatureMap.FromString(packed.value)
    return {name: SignatureInfo(name, sig.method_name,
                                {k: _spec(v) for k, v in sig.inputs.items()},
                                {k: _spec(v) for k, v in sig.outputs.items()})
            for name, sig in sigmap.signature_def.items()}


def pick(signatures: Mapping[str, SignatureInfo], name: str, model: str) -> SignatureInfo:
    if name not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise ModelNotFoundError(f"model {model!r} has no signature {name!r} (signatures: {known})",
                                 "NOT_FOUND")
    return signatures[name]


def _shape_fits(expected: tuple[int, ...] | None, actual: tuple[int, ...]) -> bool:
    if expected is None:
        return True
    return len(expected) == len(actual) and all(e < 0 or e == a for e, a in zip(expected, actual, strict=True))


def check_inputs(signature: SignatureInfo, inputs: Mapping[str, Any]) -> None:
    """Raise InputMismatchError naming the first input that cannot be served as given."""
    missing = sorted(set(signature.inputs) - set(inputs))
    if missing:
        spec = signature.inputs[missing[0]]
        raise InputMismatchError(f"missing input {missing[0]!r} (expected {spec.describe()}); "
                                 f"signature {signature.name!r} takes {sorted(signature.inputs)}")
    unknown = sorted(set(inputs) - set(signature.inputs))
    if unknown:
        raise InputMismatchError(f"unknown input {unknown[0]!r}; signature {signature.name!r} "
                                 f"takes {sorted(signature.inputs)}")
    for name, value in inputs.items():
        spec = signature.inputs[name]
        array = np.asarray(value)
        try:
            got = codec.dtype_name(codec.wire_dtype(array.dtype))
        except codec.CodecError:
            got = str(array.dtype)
        if got != spec.dtype or not _shape_fits(spec.shape, array.shape):
            raise InputMismatchError(
                f"input {name!r} expects {spec.describe()}, got {got} "
                f"[{','.join(str(d) for d in array.shape)}]")
