"""ModelService.GetModelStatus for one replica: the protobuf messages encoded by hand, and the call.

Why by hand: importing the TF Serving protos pulls all of TensorFlow (≈10 s cold in the image),
far too slow for a status look every second; the two messages need a few varints. The call
itself is the agent's only use of a module outside the standard library: `grpc`, imported in
`version_state` alone (serve mode, in our serving image, which has grpcio), never at import time.
"""

from __future__ import annotations

from typing import Any

from .common import read_optional

AVAILABLE, END = 30, 50
STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def status_request(model: str, version: int) -> bytes:
    """GetModelStatusRequest{model_spec{name, version{value}}} on the wire."""
    version_msg = _varint(1 << 3) + _varint(version)  # Int64Value.value
    spec = _field(1, model.encode()) + _field(2, version_msg)
    return _field(1, spec)


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            out.append((number, value))
        elif wire == 2:
            n, i = _read_varint(data, i)
            out.append((number, data[i:i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def parse_status(data: bytes) -> dict[int, tuple[int, str]]:
    """GetModelStatusResponse -> {version: (state number, error message)}."""
    rows: dict[int, tuple[int, str]] = {}
    for number, value in _fields(data):
        if number != 1 or not isinstance(value, bytes):
            continue
        version, state, message = 0, 0, ""
        for n, v in _fields(value):
            if n == 1 and isinstance(v, int):
                version = v
            elif n == 2 and isinstance(v, int):
                state = v
            elif n == 3 and isinstance(v, bytes):
                message = next((m.decode(errors="replace") for k, m in _fields(v)
                                if k == 2 and isinstance(m, bytes)), "")
        rows[version] = (state, message)
    return rows


def version_state(spec: dict[str, Any], timeout_s: float) -> tuple[int, str]:
    """(state, error) of the intended version, asked over this replica's own UNIX socket
    (the TCP port is shared by every replica on the node, so it could answer for another one)."""
    import grpc

    token = read_optional(spec.get("token_file"))
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(f"unix:{spec['socket']}") as channel:
        call = channel.unary_unary(STATUS_METHOD)
        reply = call(status_request(spec["model"], int(spec["version"])), timeout=timeout_s, metadata=metadata)
    return parse_status(reply).get(int(spec["version"]), (0, "not reported"))
