"""Zero-copy decoding of PredictResponse bytes: a tiny protobuf wire scanner.

The protobuf runtime copies every bytes field when it is read, so a 38 MB
`tensor_content` costs a full copy before numpy even sees it. Scanning the
serialized response ourselves lets `np.frombuffer` view the tensor bytes where
gRPC delivered them. Only the few fields that carry bulk data are scanned;
TF Serving answers in the typed fields by default (`float_val`, ...): packed
`float_val` / `double_val` are little-endian arrays on the wire too, so they are
viewed the same way. Anything else (varint lists, strings, shapes, the model
spec) is handed to the generated message classes, so the scanner stays small.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from serving.client import codec
from serving.client._generated import tfrollout_wire_pb2 as wire

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# TensorProto field number → dtype it holds as packed fixed-width values (viewable as-is)
_PACKED_FIXED = {5: (wire.DT_FLOAT, np.dtype("<f4")), 6: (wire.DT_DOUBLE, np.dtype("<f8"))}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int):
    """Yield (field number, wire type, value) where a LEN value is a (start, end) pair."""
    value: Any  # an int, a (start, end) pair or None, by wire type
    while pos < end:
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == _VARINT:
            value, pos = _varint(buf, pos)
        elif kind == _LEN:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        elif kind == _I64:
            value, pos = None, pos + 8
        elif kind == _I32:
            value, pos = None, pos + 4
        else:
            raise codec.CodecError(f"unsupported protobuf wire type {kind}")
        yield number, kind, value
    if pos != end:
        raise codec.CodecError("truncated protobuf message")


def decode_tensor_bytes(buf: memoryview, start: int, end: int) -> np.ndarray:
    """Decode one serialized Tensor; `tensor_content` becomes a view into `buf`."""
    dtype_code, shape, content, packed = 0, None, None, None
    for number, kind, value in _fields(buf, start, end):
        if number == 1 and kind == _VARINT:
            dtype_code = value
        elif number == 2 and kind == _LEN:
            shape = wire.Shape.FromString(buf[value[0]:value[1]].tobytes())
        elif number == 4 and kind == _LEN:
            content = value
        elif number in _PACKED_FIXED and kind == _LEN and packed is None:
            packed = number, value
        elif number != 3:  # other value lists or anything unusual: the generated class decides
            return codec.decode(wire.Tensor.FromString(buf[start:end].tobytes()))
    if packed is not None and content is None and _PACKED_FIXED[packed[0]][0] == dtype_code:
        content = packed[1]  # a packed float_val/double_val is the tensor's bytes
    elif dtype_code == wire.DT_STRING or content is None or packed is not None:
        return codec.decode(wire.Tensor.FromString(buf[start:end].tobytes()))
    tensor = wire.Tensor(dtype=cast(wire.DataType, dtype_code))
    if shape is not None:
        tensor.tensor_shape.CopyFrom(shape)
    dims = codec._shape_of(tensor)
    dtype = codec.numpy_dtype(dtype_code)
    count = int(np.prod(dims, dtype=np.int64))
    if packed is not None and content[1] - content[0] != count * dtype.itemsize:
        # fewer values than elements (TF's last-value repetition): the generic rule applies
        return codec.decode(wire.Tensor.FromString(buf[start:end].tobytes()))
    if content[1] - content[0] != count * dtype.itemsize:
        raise codec.CodecError(f"tensor_content has {content[1] - content[0]} bytes; shape "
                               f"{list(dims)} of {codec.dtype_name(dtype_code)} needs "
                               f"{count * dtype.itemsize}")
    return np.frombuffer(buf[content[0]:content[1]], dtype=dtype).reshape(dims)


class FastPredictResponse:
    """What the client needs from a PredictResponse: decoded outputs and the model spec."""

    __slots__ = ("outputs", "model_spec")

    def __init__(self, outputs: dict[str, np.ndarray], model_spec: wire.ModelSpec) -> None:
        self.outputs = outputs
        self.model_spec = model_spec

    @classmethod
    def FromString(cls, data: bytes) -> FastPredictResponse:  # noqa: N802 - protobuf's spelling
        buf = memoryview(data)
        outputs: dict[str, np.ndarray] = {}
        spec = wire.ModelSpec()
        for number, kind, value in _fields(buf, 0, len(buf)):
            if number == 1 and kind == _LEN:
                key, tensor = "", None
                for sub, sub_kind, span in _fields(buf, value[0], value[1]):
                    if sub == 1 and sub_kind == _LEN:
                        key = buf[span[0]:span[1]].tobytes().decode("utf-8")
                    elif sub == 2 and sub_kind == _LEN:
                        tensor = span
                outputs[key] = (decode_tensor_bytes(buf, *tensor) if tensor is not None
                                else np.zeros((0,), np.float32))
            elif number == 2 and kind == _LEN:
                spec = wire.ModelSpec.FromString(buf[value[0]:value[1]].tobytes())
        return cls(outputs, spec)


def decode_tensor(data: Any) -> np.ndarray:
    """Decode a serialized Tensor message (bytes-like) without copying its content."""
    buf = memoryview(data)
    return decode_tensor_bytes(buf, 0, len(buf))
