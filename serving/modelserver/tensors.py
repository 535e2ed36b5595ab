"""Tensor checks and conversions: TensorProto <-> numpy, and a request's inputs
against a SignatureDef. Pure (numpy + protos), so every rejection rule is
unit-testable without a server; messages name the offending input."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from .errors import invalid_argument
from .limits import check_declared

# dtype enum -> (numpy dtype, TensorProto repeated field holding values)
_DTYPES: dict[int, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val"),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val"),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: (np.dtype(object), "string_val"),
}
_NP_TO_DT = {np_dtype: dt for dt, (np_dtype, _) in _DTYPES.items() if dt != types_pb2.DT_STRING}


def dtype_name(dt: int) -> str:
    """`DT_FLOAT` → `float` (TensorFlow's short names, used in messages)."""
    return types_pb2.DataType.Name(dt)[3:].lower() if dt in types_pb2.DataType.values() else str(dt)


def numpy_dtype(dt: int) -> np.dtype:
    try:
        return _DTYPES[dt][0]
    except KeyError:
        raise invalid_argument(f"unsupported dtype: {dtype_name(dt)}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One signature input/output: alias, tensor name, dtype enum, dims (None = unknown rank)."""

    alias: str
    name: str
    dtype: int
    dims: tuple[int, ...] | None

    @classmethod
    def from_tensor_info(cls, alias: str, info) -> TensorSpec:
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
        return cls(alias=alias, name=info.name, dtype=int(info.dtype), dims=dims)

    def shape_text(self) -> str:
        return "<unknown>" if self.dims is None else "[" + ",".join(str(d) for d in self.dims) + "]"


@dataclass(frozen=True)
class SignatureSpec:
    """What a signature accepts and produces (from the SavedModel's SignatureDef)."""

    key: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @classmethod
    def from_signature_def(cls, key: str, sig) -> SignatureSpec:
        return cls(
            key=key,
            inputs={a: TensorSpec.from_tensor_info(a, i) for a, i in sig.inputs.items()},
            outputs={a: TensorSpec.from_tensor_info(a, i) for a, i in sig.outputs.items()},
        )


class OwnedInputs(dict):
    """Decoded inputs nobody else holds: a run may drop them once TensorFlow has its own
    copy, so the request bytes they view are freed before the model runs (peak memory)."""


# ----------------------------------------------------------- proto <-> numpy


def tensor_dims(alias: str, proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    """The declared shape, refusing unknown rank and negative dimensions."""
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {alias} (unknown rank)")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid_argument(f"tensor parsing error: {alias} (negative dimension in {list(shape)})")
    if math.prod(d for d in shape if d) >= 2**63:  # numpy (and TF) cannot index it, even empty
        raise invalid_argument(f"tensor parsing error: {alias} (shape {list(shape)} overflows int64)")
    return shape


def request_dtype(alias: str, dt: int) -> np.dtype:
    if dt not in _DTYPES:
        raise invalid_argument(f"tensor parsing error: {alias} (unsupported dtype {dtype_name(dt)})")
    return _DTYPES[dt][0]


def value_field(dt: int) -> str:
    """Name of the TensorProto repeated field holding values of dtype `dt` ("" if unsupported)."""
    return _DTYPES[dt][1] if dt in _DTYPES else ""


def check_size(alias: str, dt: int, shape: tuple[int, ...], limit: int | None) -> int:
    """Declared bytes (shape × dtype size); RESOURCE_EXHAUSTED over `limit`, before any allocation."""
    return check_declared(alias, shape, dtype_name(dt), request_dtype(alias, dt).itemsize, limit)


def from_content(alias: str, dt: int, shape: tuple[int, ...], content) -> np.ndarray:
    """A read-only view over tensor_content (no copy); its length must match the shape."""
    np_dtype = request_dtype(alias, dt)
    need = math.prod(shape) * np_dtype.itemsize
    if len(content) != need:
        raise invalid_argument(
            f"tensor parsing error: {alias} (tensor_content has {len(content)} bytes, "
            f"shape {list(shape)} of {dtype_name(dt)} needs {need})")
    return np.frombuffer(content, dtype=np_dtype).reshape(shape)


def typed_values(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The typed *_val field as a flat array, one value at a time (no list of all values).

    Integers narrower than the field wrap, as TensorFlow's static_cast does."""
    np_dtype, field = _DTYPES[proto.dtype]
    values = getattr(proto, field)
    n = len(values)
    if proto.dtype == types_pb2.DT_STRING:
        flat = np.empty(n, dtype=object)
        for i, v in enumerate(values):
            flat[i] = v
        return flat
    if proto.dtype == types_pb2.DT_HALF:
        return np.fromiter(values, np.int32, count=n).astype(np.uint16).view(np.float16)
    if field == "int_val":
        return np.fromiter(values, np.int32, count=n).astype(np_dtype)
    return np.fromiter(values, np_dtype, count=n)


def shape_values(alias: str, flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Typed values to the declared shape (one value fills it, as TensorFlow does)."""
    count = math.prod(shape)
    n = len(flat)
    if n == count:
        return flat.reshape(shape)
    if n == 1 and count > 1:
        return np.full(shape, flat[0], dtype=flat.dtype)
    raise invalid_argument(
        f"tensor parsing error: {alias} ({n} values given for shape {list(shape)})")


def proto_to_ndarray(alias: str, proto: tensor_pb2.TensorProto, limit: int | None = None) -> np.ndarray:
    """Decode a request TensorProto (tensor_content or typed *_val field).

    The declared size is checked against `limit` before anything is allocated."""
    request_dtype(alias, proto.dtype)
    shape = tensor_dims(alias, proto)
    check_size(alias, proto.dtype, shape, limit)
    if proto.dtype != types_pb2.DT_STRING:
        content = proto.tensor_content  # each access copies: read it once
        if content:
            return from_content(alias, proto.dtype, shape, content)
    return shape_values(alias, typed_values(proto), shape)


def fill_proto(proto: tensor_pb2.TensorProto, arr: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an output into `proto` in place (numeric as tensor_content: compact, fast)."""
    arr = np.asarray(arr)
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=int(d))
    if arr.dtype == object or arr.dtype.kind in "SU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in arr.reshape(-1))
        return proto
    dt = _NP_TO_DT.get(arr.dtype)
    if dt is None:
        raise invalid_argument(f"unsupported output dtype {arr.dtype}")
    proto.dtype = dt
    proto.tensor_content = np.ascontiguousarray(arr).tobytes()
    return proto


def ndarray_to_proto(arr: np.ndarray) -> tensor_pb2.TensorProto:
    """A new TensorProto for `arr` (see fill_proto)."""
    return fill_proto(tensor_pb2.TensorProto(), arr)


# -------------------------------------------------------------- validation


def check_input_aliases(sig: SignatureSpec, given: Sequence[str]) -> None:
    """Same alias rules and messages as TF Serving's predict path."""
    expected = sorted(sig.inputs)
    sent = sorted(given)
    if len(sent) != len(expected):
        extra = sorted(set(sent) - set(expected))
        missing = sorted(set(expected) - set(sent))
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sent)}}}) != len({{{','.join(expected)}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
    for alias in sent:
        if alias not in sig.inputs:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(expected)}}}.")


def check_array(spec: TensorSpec, arr: np.ndarray) -> None:
    """dtype and shape of one input against its signature spec."""
    want = numpy_dtype(spec.dtype)
    if arr.dtype != want and not (want.kind == "O" and arr.dtype.kind in "OSU"):
        got = _NP_TO_DT.get(arr.dtype)
        got_name = dtype_name(got) if got is not None else str(arr.dtype)
        raise invalid_argument(
            f"Expects arg for input '{spec.alias}' to be {dtype_name(spec.dtype)} "
            f"but {got_name} is provided")
    if spec.dims is None:
        return
    if arr.ndim != len(spec.dims):
        raise invalid_argument(
            f"input '{spec.alias}' must have rank {len(spec.dims)} (shape {spec.shape_text()}) "
            f"but has rank {arr.ndim} (shape [{','.join(map(str, arr.shape))}])")
    for i, (want_d, got_d) in enumerate(zip(spec.dims, arr.shape, strict=True)):
        if want_d >= 0 and want_d != got_d:
            raise invalid_argument(
                f"input '{spec.alias}' dimension {i} must be {want_d} (shape {spec.shape_text()}) "
                f"but is {got_d} (shape [{','.join(map(str, arr.shape))}])")


def decode_inputs(sig: SignatureSpec, inputs: Mapping[str, tensor_pb2.TensorProto],
                  limit: int | None = None) -> dict[str, np.ndarray]:
    """Validate a PredictRequest's inputs map and decode it to numpy arrays."""
    check_input_aliases(sig, list(inputs))
    out = {}
    for alias, proto in inputs.items():
        arr = proto_to_ndarray(alias, proto, limit)
        check_array(sig.inputs[alias], arr)
        out[alias] = arr
    return out


def check_arrays(sig: SignatureSpec, arrays: Mapping[str, np.ndarray]) -> None:
    """Validate already-decoded inputs (REST path)."""
    check_input_aliases(sig, list(arrays))
    for alias, arr in arrays.items():
        check_array(sig.inputs[alias], arr)


def select_outputs(sig: SignatureSpec, output_filter: Sequence[str]) -> list[str]:
    """Output aliases to return: the filter (validated) or all outputs."""
    if not output_filter:
        return sorted(sig.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in sig.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(sig.outputs))}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)
