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
    method_name: str = ""

    @classmethod
    def from_signature_def(cls, key: str, sig) -> SignatureSpec:
        return cls(
            key=key,
            inputs={a: TensorSpec.from_tensor_info(a, i) for a, i in sig.inputs.items()},
            outputs={a: TensorSpec.from_tensor_info(a, i) for a, i in sig.outputs.items()},
            method_name=sig.method_name,
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
    np_dtype = request_dtype(alias, proto.dtype)
    shape = tensor_dims(alias, proto)
    if math.prod(d for d in shape if d) * max(np_dtype.itemsize, 1) >= 2**63:  # numpy cannot index it
        raise invalid_argument(f"tensor parsing error: {alias} (shape {list(shape)} of "
                               f"{dtype_name(proto.dtype)} is too large to index)")
    check_size(alias, proto.dtype, shape, limit)
    if proto.dtype != types_pb2.DT_STRING:
        content = proto.tensor_content  # each access copies: read it once
        if content:
            return from_content(alias, proto.dtype, shape, content)
    return shape_values(alias, typed_values(proto), shape)


# packed fixed-width value fields: (field number, little-endian wire dtype)
_FIXED_FIELDS: dict[str, tuple[int, np.dtype]] = {"float_val": (5, np.dtype("<f4")), "double_val": (6, np.dtype("<f8"))}


def _packed_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (tag, length varint, payload)."""
    out = bytearray()
    for value in (number << 3 | 2, len(payload)):
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def fill_proto(proto: tensor_pb2.TensorProto, arr: np.ndarray,
               tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Encode an output into `proto` in place, as TF Serving does: the typed *_val field
    (Tensor::AsProtoField) by default, or tensor_content (AsProtoTensorContent) when
    --enable_serialization_as_tensor_content is set. Strings always use string_val."""
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
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(arr).tobytes()
        return proto
    field = _DTYPES[dt][1]
    flat = arr.reshape(-1)
    if field in _FIXED_FIELDS:  # packed bytes parsed by protobuf's C code: no Python float per value
        number, wire = _FIXED_FIELDS[field]
        if flat.size:
            proto.MergeFromString(_packed_field(number, flat.astype(wire, copy=False).tobytes()))
    elif dt == types_pb2.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


def ndarray_to_proto(arr: np.ndarray, tensor_content: bool = True) -> tensor_pb2.TensorProto:
    """A new TensorProto for `arr` (see fill_proto; tensor_content unless told otherwise)."""
    return fill_proto(tensor_pb2.TensorProto(), arr, tensor_content)


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


def decode_inputs(sig: SignatureSpec, inputs: Mapping[str, tensor_pb2.TensorProto],
                  limit: int | None = None) -> dict[str, np.ndarray]:
    """Check a PredictRequest's aliases and decode its tensors (sizes checked before
    allocation). Shape and dtype against the signature are not checked here: like TF
    Serving, the graph decides, and its errors are returned."""
    check_input_aliases(sig, list(inputs))
    return {alias: proto_to_ndarray(alias, proto, limit) for alias, proto in inputs.items()}


def check_arrays(sig: SignatureSpec, arrays: Mapping[str, np.ndarray]) -> None:
    """Aliases of already-decoded inputs (REST path); shapes are the graph's to check."""
    check_input_aliases(sig, list(arrays))


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
