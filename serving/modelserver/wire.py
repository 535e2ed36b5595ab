"""Zero-copy PredictRequest reader: the gRPC request deserializer for Predict.

Why not `PredictRequest.FromString`: protobuf's Python parser copies
tensor_content into its arena and again on every access, and typed values
become Python objects on the way to numpy; with gRPC's own copies a 512 MB
request cost ~19 GB. This reader walks the protobuf wire format of the request
and its TensorProtos, leaves tensor_content and packed numeric values as views
into the received bytes, and lets protobuf parse only the small rest (model_spec,
output_filter, dtypes, shapes, strings). Each tensor's declared size
(shape × dtype) is checked against --max_request_bytes and the request is charged
to the in-flight budget here, before any tensor memory is allocated.

It runs in gRPC's polling thread, so it never raises and does no per-value work:
a malformed request becomes an INVALID_ARGUMENT answered by the handler, and a
request with an unusual number of fields is parsed by protobuf in the handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from .errors import ServingError, invalid_argument
from .limits import ByteBudget, Ticket, release_freed_memory
from .tensors import (
    OwnedInputs,
    SignatureSpec,
    check_input_aliases,
    check_size,
    decode_inputs,
    from_content,
    request_dtype,
    shape_values,
    tensor_dims,
    typed_values,
    value_field,
)

TRIM_ABOVE = 8 << 20  # after receiving this much, hand gRPC's freed buffers back to the OS
MAX_FIELDS = 20_000  # beyond this many wire fields, protobuf parses (in the handler)
_CONTENT = 4  # TensorProto.tensor_content
# TensorProto value field number → (wire dtype of its packed elements, None = varint)
_PACKED: dict[int, np.dtype | None] = {
    5: np.dtype("<f4"), 6: np.dtype("<f8"),  # float_val, double_val
    7: None, 10: None, 11: None, 13: None, 16: None, 17: None,  # int, int64, bool, half, uint32, uint64
}
_FIELD_NUMBER = {"float_val": 5, "double_val": 6, "int_val": 7, "int64_val": 10, "bool_val": 11,
                 "half_val": 13, "uint32_val": 16, "uint64_val": 17}
_VARINT_CHUNK = 1 << 22


class WireError(Exception):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


@dataclass
class _Field:
    number: int
    wire_type: int
    key_start: int  # where the field's tag begins (for copying the whole field)
    start: int  # payload start (after the length prefix for wire type 2)
    end: int


class _Walker:
    """Iterates the fields of one message span, counting every field it visits."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.visited = 0

    def fields(self, pos: int, end: int):
        buf = self.buf
        while pos < end:
            self.visited += 1
            if self.visited > MAX_FIELDS:
                raise _TooManyFields
            key_start = pos
            key, pos = _varint(buf, pos, end)
            number, wire_type = key >> 3, key & 7
            if number == 0:
                raise WireError("field number 0")
            start = pos
            if wire_type == 0:
                _, pos = _varint(buf, pos, end)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, start = _varint(buf, pos, end)
                pos = start + length
            else:
                raise WireError(f"unsupported wire type {wire_type}")
            if pos > end:
                raise WireError("truncated field")
            yield _Field(number, wire_type, key_start, start, pos)


class _TooManyFields(Exception):
    pass


@dataclass
class WireTensor:
    """One input: a TensorProto without its bulk values, plus views of those values."""

    header: tensor_pb2.TensorProto
    content: memoryview | None = None
    packed: list[memoryview] = field(default_factory=list)
    packed_number: int = 0

    def to_ndarray(self, alias: str, limit: int | None) -> np.ndarray:
        dt = self.header.dtype
        request_dtype(alias, dt)
        shape = tensor_dims(alias, self.header)
        check_size(alias, dt, shape, limit)
        if self.content is not None and len(self.content) and dt != types_pb2.DT_STRING:
            return from_content(alias, dt, shape, self.content)
        if self.packed and dt != types_pb2.DT_STRING and \
                self.packed_number == _FIELD_NUMBER.get(value_field(dt)):
            return shape_values(alias, _packed_values(alias, dt, self.packed, shape), shape)
        return shape_values(alias, typed_values(self.header), shape)


def _packed_values(alias: str, dt: int, chunks: list[memoryview], shape: tuple[int, ...]) -> np.ndarray:
    """Packed *_val bytes → flat array of the request dtype; counts are checked before allocating."""
    want = request_dtype(alias, dt)
    count = math.prod(shape)
    raw = chunks[0] if len(chunks) == 1 else memoryview(b"".join(chunks))
    wire = _PACKED[_FIELD_NUMBER[value_field(dt)]]
    if wire is not None:
        if len(raw) % wire.itemsize:
            raise invalid_argument(f"tensor parsing error: {alias} (packed values of {len(raw)} bytes "
                                   f"are not whole {wire.itemsize}-byte values)")
        n = len(raw) // wire.itemsize
        _check_count(alias, n, count, shape)
        return np.frombuffer(raw, dtype=wire).astype(want, copy=False)
    n = _count_varints(alias, raw)
    _check_count(alias, n, count, shape)
    return _decode_varints(raw, n, dt, want)


def _check_count(alias: str, n: int, count: int, shape: tuple[int, ...]) -> None:
    if n != count and not (n == 1 and count > 1):
        raise invalid_argument(f"tensor parsing error: {alias} ({n} values given for shape {list(shape)})")


def _count_varints(alias: str, raw: memoryview) -> int:
    b = np.frombuffer(raw, np.uint8)
    if b.size and b[-1] >= 0x80:
        raise invalid_argument(f"tensor parsing error: {alias} (truncated packed values)")
    return sum(int(np.count_nonzero(b[i:i + _VARINT_CHUNK] < 0x80))
               for i in range(0, b.size, _VARINT_CHUNK))


def _decode_varints(raw: memoryview, n: int, dt: int, want: np.dtype) -> np.ndarray:
    """`n` varints, decoded chunk by chunk (temporaries stay a few MB) into the final array."""
    b = np.frombuffer(raw, np.uint8)
    out = np.empty(n, dtype=np.uint16 if dt == types_pb2.DT_HALF else want)
    pos = filled = 0
    while pos < b.size:
        chunk = b[pos:pos + _VARINT_CHUNK]
        ends = np.flatnonzero(chunk < 0x80)
        if not ends.size:
            raise invalid_argument("tensor parsing error: packed varint longer than 10 bytes")
        starts = np.concatenate(([0], ends[:-1] + 1))
        lengths = ends - starts + 1
        longest = int(lengths.max())
        if longest > 10:
            raise invalid_argument("tensor parsing error: packed varint longer than 10 bytes")
        vals = np.zeros(ends.size, np.uint64)
        for k in range(longest):
            sel = np.flatnonzero(lengths > k)
            vals[sel] |= (chunk[starts[sel] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        part = vals != 0 if out.dtype == np.bool_ else vals.astype(out.dtype)  # wraps like static_cast
        out[filled:filled + part.size] = part
        filled += part.size
        pos += int(ends[-1]) + 1
    return out.view(np.float16) if dt == types_pb2.DT_HALF else out


@dataclass
class WirePredict:
    """What the Predict handler receives instead of a parsed PredictRequest."""

    request: predict_pb2.PredictRequest | None = None
    tensors: dict[str, WireTensor] | None = None  # None: decode request.inputs (protobuf path)
    raw: bytes | None = None  # kept only for the protobuf path
    error: ServingError | None = None
    ticket: Ticket | None = None
    limit: int | None = None

    @property
    def model_name(self) -> str:
        return self.request.model_spec.name if self.request is not None else ""

    def message(self) -> predict_pb2.PredictRequest:
        """The request (parsed by protobuf now if the reader handed it over)."""
        if self.error is not None:
            raise self.error
        if self.request is None:
            try:
                self.request = predict_pb2.PredictRequest.FromString(self.raw or b"")
            except DecodeError as exc:
                raise invalid_argument(f"Could not parse PredictRequest: {exc}") from None
            self.raw = None
            _declared_total(self.request.inputs.items(), self.limit)
        return self.request

    def decode(self, spec: SignatureSpec) -> dict[str, np.ndarray]:
        """Validated input arrays (views over the received bytes where possible)."""
        request = self.message()
        if self.tensors is None:
            return decode_inputs(spec, request.inputs, self.limit)
        check_input_aliases(spec, list(self.tensors))
        out = OwnedInputs()
        for alias, tensor in self.tensors.items():
            out[alias] = tensor.to_ndarray(alias, self.limit)
        self.tensors = None  # the arrays are the only views of the received bytes now
        return out

    def charge(self, extra: int) -> None:
        """Add what running the request will cost to the bytes it holds in the budget."""
        if self.ticket is not None:
            self.ticket.grow(extra)

    def release(self) -> None:
        """Give the request's bytes back to the in-flight budget (idempotent)."""
        if self.ticket is not None:
            self.ticket.release()
        self.tensors, self.raw = None, None


def _read_tensor(walker: _Walker, chunks: list[tuple[int, int]],
                 header: tensor_pb2.TensorProto) -> WireTensor:
    """Parse one TensorProto's small fields into `header`; bulk values stay views."""
    buf = walker.buf
    header_parts: list[memoryview] = []
    content: memoryview | None = None
    packed: dict[int, list[memoryview]] = {}
    unpacked: set[int] = set()
    fields = [f for start, end in chunks for f in walker.fields(start, end)]
    for f in fields:
        if f.number in _PACKED and f.wire_type != 2:
            unpacked.add(f.number)  # element-by-element encoding: protobuf keeps the order right
    for f in fields:
        if f.number == _CONTENT and f.wire_type == 2:
            content = buf[f.start:f.end]
        elif f.number in _PACKED and f.wire_type == 2 and f.number not in unpacked:
            packed.setdefault(f.number, []).append(buf[f.start:f.end])
        else:
            header_parts.append(buf[f.key_start:f.end])
    header.MergeFromString(b"".join(header_parts))
    tensor = WireTensor(header, content)
    value_number = _FIELD_NUMBER.get(value_field(header.dtype))
    if value_number in packed:
        tensor.packed, tensor.packed_number = packed[value_number], value_number
    elif packed:  # values in a field the dtype does not use: keep protobuf's view of them
        for number, parts in packed.items():
            tensor.header.MergeFromString(b"".join(_field_bytes(number, p) for p in parts))
    return tensor


def _field_bytes(number: int, payload: memoryview) -> bytes:
    """Re-encode one length-delimited field (rare path: packed values of another dtype)."""
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + bytes(payload)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_predict(raw: bytes, limit: int | None, budget: ByteBudget | None) -> WirePredict:
    """Parse what is cheap, check declared sizes, charge the budget; never raises."""
    if len(raw) >= TRIM_ABOVE:
        release_freed_memory()
    try:
        wp = _read(raw, limit)
        if wp.tensors is not None:
            cost = len(raw) + _declared_total(((a, t.header) for a, t in wp.tensors.items()), limit)
        else:
            cost = 3 * len(raw)  # protobuf copy + typed values + the tensors TF makes
        wp.ticket = budget.admit(cost) if budget is not None else None
        return wp
    except ServingError as err:
        return WirePredict(error=err)
    except WireError as exc:
        return WirePredict(error=invalid_argument(f"Could not parse PredictRequest: {exc}"))
    except DecodeError as exc:
        return WirePredict(error=invalid_argument(f"Could not parse PredictRequest: {exc}"))
    except UnicodeDecodeError:
        return WirePredict(error=invalid_argument(
            "Could not parse PredictRequest: an input alias is not valid UTF-8"))


def _declared_total(inputs: Iterable[tuple[str, tensor_pb2.TensorProto]], limit: int | None) -> int:
    """Sum of declared input bytes; raises only RESOURCE_EXHAUSTED (over the cap): other
    defects are reported when the inputs are decoded, after the model is resolved,
    in TF Serving's order."""
    total = 0
    for alias, proto in inputs:
        try:
            total += check_size(alias, proto.dtype, tensor_dims(alias, proto), limit)
        except ServingError as err:
            if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
    return total


def _read(raw: bytes, limit: int | None) -> WirePredict:
    buf = memoryview(raw)
    walker = _Walker(buf)
    rest: list[memoryview] = []
    entries: dict[str, list[tuple[int, int]]] = {}
    try:
        for f in walker.fields(0, len(buf)):
            if f.number != 2 or f.wire_type != 2:
                rest.append(buf[f.key_start:f.end])
                continue
            key = ""
            values: list[tuple[int, int]] = []
            for g in walker.fields(f.start, f.end):
                if g.number == 1 and g.wire_type == 2:
                    key = bytes(buf[g.start:g.end]).decode("utf-8")
                elif g.number == 2 and g.wire_type == 2:
                    values.append((g.start, g.end))  # repeated occurrences merge
            entries[key] = values  # a later entry with the same key replaces the earlier one
        request = predict_pb2.PredictRequest.FromString(b"".join(rest))
        tensors = {key: _read_tensor(walker, chunks, request.inputs[key])
                   for key, chunks in entries.items()}
    except _TooManyFields:
        return WirePredict(raw=raw, limit=limit)
    return WirePredict(request=request, tensors=tensors, limit=limit)


def deserializer(limit: int | None, budget: ByteBudget | None) -> Callable[[bytes], WirePredict]:
    """The request_deserializer for Predict with this server's limits."""
    return lambda raw: read_predict(raw, limit, budget)
