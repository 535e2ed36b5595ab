"""TF Serving's REST JSON formats: request `instances` (row) / `inputs` (columnar)
→ numpy arrays, and outputs → `predictions` / `outputs`. Pure, unit-testable."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from .errors import invalid_argument
from .example_json import write_decimal
from .tensors import SignatureSpec, TensorSpec, check_arrays, dtype_name, numpy_dtype

# Python objects json.loads and np.array make per JSON value, upper bound (a float is 24
# bytes, a list slot 8, a one-element list 64); measured: `[[0.25], ...]` bodies took ≈24×
# their size through the whole predict path before this estimate bounded them.
_BYTES_PER_VALUE = 96


def parse_cost(body: bytes) -> int:
    """Bytes that parsing and converting `body` may allocate (beyond the body itself),
    counted without parsing: every JSON value is separated by `,` or opened by `[`/`{`."""
    values = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    return 2 * len(body) + _BYTES_PER_VALUE * values


def parse_json(body: bytes) -> Any:
    """Any JSON document, or TF Serving-style parse error (never a Python exception:
    nesting past the recursion limit and over-long integers are parse errors too)."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise invalid_argument(f"JSON Parse error: {exc}") from None


def parse_body(body: bytes) -> dict[str, Any]:
    """JSON object or TF Serving-style parse error."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Value not an object")
    return doc


def request_format(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(signature_name, 'instances' | 'inputs') with TF Serving's key rules."""
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise invalid_argument("Not both 'inputs' and 'instances' can be specified in the request.")
    if not (has_rows or has_cols):
        raise invalid_argument("Missing 'inputs' or 'instances' key")
    return sig, "instances" if has_rows else "inputs"


def _decode_strings(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise ValueError("a JSON object inside a string tensor must be {\"b64\": \"...\"}")
        return base64.b64decode(value["b64"], validate=True)
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(f"expected a string, got {type(value).__name__}")


def to_array(spec: TensorSpec, value: Any) -> np.ndarray:
    """One input's JSON value → array of the signature's dtype (errors name the input)."""
    want = numpy_dtype(spec.dtype)
    try:
        if spec.dtype == types_pb2.DT_STRING:
            decoded = _decode_strings(value)
            arr = np.empty(np.shape(decoded) if decoded != [] else (0,), dtype=object)
            if arr.shape == ():
                arr[()] = decoded
            else:
                arr[...] = decoded
            return arr
        arr = np.array(value)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid_argument(f"Failed to process input '{spec.alias}': {exc}") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise invalid_argument(
            f"Failed to process input '{spec.alias}': expected a (non-ragged) array of "
            f"{dtype_name(spec.dtype)} values")
    if arr.size == 0:
        return arr.astype(want)
    if want.kind in "iu" and arr.dtype.kind not in "iub":
        raise invalid_argument(
            f"Failed to process input '{spec.alias}': {dtype_name(spec.dtype)} expected, got {arr.dtype.name} values")
    if want.kind == "b" and arr.dtype.kind != "b":
        raise invalid_argument(f"Failed to process input '{spec.alias}': bool expected")
    try:
        with np.errstate(over="raise", invalid="raise"):
            return arr.astype(want, casting="unsafe") if want.kind != "f" else arr.astype(want)
    except (OverflowError, FloatingPointError) as exc:
        raise invalid_argument(f"Failed to process input '{spec.alias}': {exc}") from None


def decode_request(spec: SignatureSpec, doc: Mapping[str, Any], fmt: str) -> dict[str, np.ndarray]:
    """Inputs of a REST predict request as validated arrays."""
    only = next(iter(spec.inputs.values())) if len(spec.inputs) == 1 else None
    if fmt == "instances":
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise invalid_argument("Expecting 'instances' to be an list/array")
        if not rows:
            raise invalid_argument("'instances' is empty")
        if all(isinstance(r, dict) for r in rows) and not (
                only is not None and only.dtype == types_pb2.DT_STRING and all(set(r) == {"b64"} for r in rows)):
            keys = set(rows[0])
            if any(set(r) != keys for r in rows):
                raise invalid_argument("Expecting all 'instances' objects to have the same keys")
            arrays = {}
            for alias in keys:
                if alias not in spec.inputs:
                    arrays[alias] = np.zeros(0)
                    continue
                arrays[alias] = to_array(spec.inputs[alias], [r[alias] for r in rows])
        else:
            if any(isinstance(r, dict) for r in rows) and (only is None or only.dtype != types_pb2.DT_STRING):
                raise invalid_argument("Expecting all 'instances' to be JSON objects or all to be values")
            if only is None:
                raise invalid_argument(
                    f"Missing named inputs in 'instances': the signature has {len(spec.inputs)} inputs "
                    f"({','.join(sorted(spec.inputs))}); each instance must be an object")
            arrays = {only.alias: to_array(only, rows)}
    else:
        cols = doc["inputs"]
        if isinstance(cols, dict) and not (only is not None and only.dtype == types_pb2.DT_STRING
                                           and set(cols) == {"b64"}):
            arrays = {a: (to_array(spec.inputs[a], v) if a in spec.inputs else np.zeros(0))
                      for a, v in cols.items()}
        else:
            if only is None:
                raise invalid_argument("'inputs' must be an object naming each input of the signature")
            arrays = {only.alias: to_array(only, cols)}
    check_arrays(spec, arrays)
    return arrays


def _jsonable(arr: np.ndarray, alias: str) -> Any:
    if arr.dtype == object or arr.dtype.kind == "S":
        def conv(v):
            if isinstance(v, bytes):
                if alias.endswith("_bytes"):
                    return {"b64": base64.b64encode(v).decode()}
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(v).decode()}
            return v
        return np.vectorize(conv, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
    if arr.dtype == np.float32:
        return float32_as_written(arr)
    return arr.tolist()


def float32_as_written(arr: np.ndarray) -> Any:
    """float32 values as the doubles TF Serving's JSON text denotes (WriteDecimal: six
    significant digits when they round-trip to the float32, else nine), so a client
    parsing our JSON gets 0.1 where TF Serving writes 0.1, not 0.10000000149011612."""
    return decimal_doubles(np.asarray(arr, np.float32)).tolist()


# x * 10**j is exact in float64 while the float32 significand (24 bits) and 5**j (28 bits at
# j = 12) fit in 53 bits; m / 10**j is then one correctly rounded division = the parsed decimal.
_MAX_EXACT_SCALE = 12


def _round_significant(x: np.ndarray, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """(x rounded to `digits` significant decimal digits as the nearest double, mask of the
    elements this exact arithmetic covers); the others need the text path."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log10(np.abs(x)))
        scale = (digits - 1) - exponent
        ok = np.isfinite(x) & (x != 0) & (scale >= 0) & (scale <= _MAX_EXACT_SCALE)
        power = np.power(10.0, np.where(ok, scale, 0.0))
        mantissa = np.rint(x * power)  # half-even on the exact product, as printf rounds
        lo, hi = 10.0 ** (digits - 1), 10.0 ** digits
        ok &= (np.abs(mantissa) >= lo) & (np.abs(mantissa) < hi)  # log10 off by one near a power of ten
        return mantissa / power, ok


def decimal_doubles(values: np.ndarray) -> np.ndarray:
    """float64 array of what `write_decimal(v, float32=True)` writes, parsed back — computed
    in bulk: a 1-2 µs Python call per value made large REST outputs pay seconds."""
    with np.errstate(invalid="ignore"):  # signalling NaN bit patterns
        x = values.astype(np.float64).ravel()
    six, ok6 = _round_significant(x, 6)
    out = np.where(ok6, six, x)
    ok = ok6 & (six.astype(np.float32) == values.ravel())
    need_nine = ok6 & ~ok
    nine, ok9 = _round_significant(x, 9)
    fill = need_nine & ok9
    out[fill] = nine[fill]
    ok |= fill
    for i in np.flatnonzero(~ok):  # zeros, non-finite, very small/large magnitudes, edge cases
        out[i] = float(write_decimal(float(x[i]), True))
    return out.reshape(values.shape)


def encode_response(outputs: Mapping[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """`predictions` (row) or `outputs` (columnar), single output unwrapped."""
    if fmt == "inputs":
        if len(outputs) == 1:
            alias, arr = next(iter(outputs.items()))
            return {"outputs": _jsonable(arr, alias)}
        return {"outputs": {a: _jsonable(v, a) for a, v in outputs.items()}}
    if len(outputs) == 1:
        alias, arr = next(iter(outputs.items()))
        return {"predictions": _jsonable(arr, alias)}
    sizes = {v.shape[0] if v.ndim else -1 for v in outputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise invalid_argument(
                           "Tensors in the output have different batch sizes; use the 'inputs' (columnar) format")
    n = sizes.pop()
    cols = {a: _jsonable(v, a) for a, v in outputs.items()}
    return {"predictions": [{a: cols[a][i] for a in cols} for i in range(n)]}
