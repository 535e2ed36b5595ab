"""numpy <-> TensorProto conversion written for numpy, without TensorFlow.

Encoding always packs numeric data into `tensor_content` (one contiguous
little-endian copy) because that is the cheapest form for both sides. Decoding
accepts what servers actually send: `tensor_content` (decoded zero-copy with
`np.frombuffer`, so the result is read-only), or the typed `*_val` lists that
TF Serving emits for small tensors, including the "repeat the last value"
compression TensorFlow applies to constant tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np

from serving.client._generated import tfrollout_wire_pb2 as wire

DT = wire.DataType

# Wire dtype <-> numpy dtype for everything that travels as raw bytes.
_NUMERIC: dict[int, np.dtype] = {
    DT.DT_FLOAT: np.dtype("<f4"),
    DT.DT_DOUBLE: np.dtype("<f8"),
    DT.DT_HALF: np.dtype("<f2"),
    DT.DT_INT8: np.dtype("i1"),
    DT.DT_INT16: np.dtype("<i2"),
    DT.DT_INT32: np.dtype("<i4"),
    DT.DT_INT64: np.dtype("<i8"),
    DT.DT_UINT8: np.dtype("u1"),
    DT.DT_UINT16: np.dtype("<u2"),
    DT.DT_UINT32: np.dtype("<u4"),
    DT.DT_UINT64: np.dtype("<u8"),
    DT.DT_BOOL: np.dtype("?"),
    DT.DT_COMPLEX64: np.dtype("<c8"),
    DT.DT_COMPLEX128: np.dtype("<c16"),
}
_BY_NUMPY: dict[tuple[str, int], int] = {(d.kind, d.itemsize): code for code, d in _NUMERIC.items()}

# Which typed list carries each dtype when `tensor_content` is empty.
_TYPED_FIELD: dict[int, str] = {
    DT.DT_FLOAT: "float_val",
    DT.DT_DOUBLE: "double_val",
    DT.DT_HALF: "half_val",
    DT.DT_BFLOAT16: "half_val",
    DT.DT_INT8: "int_val",
    DT.DT_INT16: "int_val",
    DT.DT_INT32: "int_val",
    DT.DT_UINT8: "int_val",
    DT.DT_UINT16: "int_val",
    DT.DT_INT64: "int64_val",
    DT.DT_UINT32: "uint32_val",
    DT.DT_UINT64: "uint64_val",
    DT.DT_BOOL: "bool_val",
    DT.DT_COMPLEX64: "scomplex_val",
    DT.DT_COMPLEX128: "dcomplex_val",
    DT.DT_STRING: "string_val",
}


class CodecError(ValueError):
    """An array or tensor that cannot be converted (unsupported dtype, bad size)."""


def _bfloat16() -> np.dtype | None:
    """ml_dtypes' bfloat16 when installed (it is light and TF-free), else None."""
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with TF installs
        return None
    return np.dtype(ml_dtypes.bfloat16)


def dtype_name(code: int) -> str:
    """`1` -> `"DT_FLOAT"` (or the raw number for codes this client does not know)."""
    try:
        return DT.Name(code)
    except ValueError:
        return f"DT_{code}"


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype a tensor of wire type `code` decodes to."""
    if code in _NUMERIC:
        return _NUMERIC[code]
    if code == DT.DT_STRING:
        return np.dtype(object)
    if code == DT.DT_BFLOAT16:
        bf16 = _bfloat16()
        if bf16 is not None:
            return bf16
    raise CodecError(f"unsupported tensor dtype {dtype_name(code)}")


def wire_dtype(dtype: np.dtype) -> int:
    """The wire type for a numpy dtype (bytes/str/object arrays travel as DT_STRING)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "SUO":
        return DT.DT_STRING
    if dtype.name == "bfloat16":
        return DT.DT_BFLOAT16
    code = _BY_NUMPY.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise CodecError(f"unsupported numpy dtype {dtype}")
    return code


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, np.bytes_ | bytearray | memoryview):
        return bytes(item)
    raise CodecError(f"string tensors hold bytes or str, got {type(item).__name__}")


def _set_shape(tensor: wire.Tensor, shape: Iterable[int]) -> None:
    dims = tensor.tensor_shape.dim
    for size in shape:
        dims.add(size=int(size))


def encode(value: Any, out: wire.Tensor | None = None) -> wire.Tensor:
    """Convert an array-like to a wire Tensor (numeric data as one `tensor_content` copy).

    `out` (an empty Tensor, e.g. a request map entry) is filled in place, which
    saves copying a large tensor a second time.
    """
    array = np.asarray(value)
    code = wire_dtype(array.dtype)
    tensor = wire.Tensor() if out is None else out
    tensor.dtype = cast(wire.DataType, code)  # the enum's values are plain ints
    _set_shape(tensor, array.shape)
    if code == DT.DT_STRING:
        tensor.string_val.extend(_as_bytes(item) for item in array.reshape(-1).tolist())
        return tensor
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    tensor.tensor_content = np.ascontiguousarray(array).tobytes()
    return tensor


def _shape_of(tensor: wire.Tensor) -> tuple[int, ...]:
    if tensor.tensor_shape.unknown_rank:
        raise CodecError("tensor has unknown rank")
    return tuple(d.size for d in tensor.tensor_shape.dim)


def _fill(values: np.ndarray, count: int) -> np.ndarray:
    """Expand a typed list to `count` values the way TensorFlow does (repeat the last)."""
    if values.size == count:
        return values
    if values.size == 0:
        return np.zeros(count, dtype=values.dtype)
    if values.size > count:
        raise CodecError(f"tensor holds {values.size} values but its shape has {count}")
    return np.concatenate([values, np.full(count - values.size, values[-1], dtype=values.dtype)])


def _typed_values(tensor: wire.Tensor, code: int, dtype: np.dtype) -> np.ndarray:
    field = _TYPED_FIELD[code]
    raw = getattr(tensor, field)
    if field == "half_val":
        # Each int32 carries one 16-bit pattern (float16 or bfloat16).
        return np.array(raw, dtype=np.int32).astype(np.uint16).view(dtype)
    if field in ("scomplex_val", "dcomplex_val"):
        parts = np.array(raw, dtype=np.float32 if code == DT.DT_COMPLEX64 else np.float64)
        return parts.view(dtype)
    return np.array(raw, dtype=dtype if field != "int_val" else np.int32).astype(dtype, copy=False)


def decode(tensor: wire.Tensor) -> np.ndarray:
    """Convert a wire Tensor to numpy; `tensor_content` is viewed, not copied (read-only)."""
    shape = _shape_of(tensor)
    count = int(np.prod(shape, dtype=np.int64))
    code = tensor.dtype
    if code == DT.DT_STRING:
        values = np.empty(len(tensor.string_val), dtype=object)
        values[:] = list(tensor.string_val)
        if values.size != count:
            values = _fill(values, count) if values.size else np.full(count, b"", dtype=object)
        return values.reshape(shape)
    dtype = numpy_dtype(code)
    content = tensor.tensor_content
    if content:
        if len(content) != count * dtype.itemsize:
            raise CodecError(f"tensor_content has {len(content)} bytes; shape {list(shape)} of "
                             f"{dtype_name(code)} needs {count * dtype.itemsize}")
        return np.frombuffer(content, dtype=dtype).reshape(shape)
    if code not in _TYPED_FIELD:
        raise CodecError(f"unsupported tensor dtype {dtype_name(code)}")
    return _fill(_typed_values(tensor, code, dtype), count).reshape(shape)


def encode_map(inputs: dict[str, Any], into: Any) -> None:
    """Encode each array of `inputs` into the protobuf map field `into` (no extra copy)."""
    for name, value in inputs.items():
        encode(value, into[name])
