"""TF Serving's REST predict responses: output arrays → `predictions` (row) /
`outputs` (columnar) JSON values, with MakeRowFormatJsonFromTensors' batch checks and
float32 values as TF Serving's WriteDecimal text denotes them, computed in bulk.

Kept apart from rest_codec (requests → arrays): writing outputs shares no code with it."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import invalid_argument
from .example_json import write_decimal


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
    """`predictions` (row) or `outputs` (columnar), single output unwrapped; the row
    format's batch checks are MakeRowFormatJsonFromTensors'."""
    if fmt == "inputs":
        if len(outputs) == 1:
            alias, arr = next(iter(outputs.items()))
            return {"outputs": _jsonable(arr, alias)}
        return {"outputs": {a: _jsonable(v, a) for a, v in outputs.items()}}
    batch = 0
    for alias, arr in outputs.items():
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if arr.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {alias} has invalid batch size: {arr.shape[0]}")
        if batch and arr.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: {arr.shape[0]} "
                                   f"expecting: {batch}")
        batch = arr.shape[0]
    if len(outputs) == 1:
        alias, arr = next(iter(outputs.items()))
        return {"predictions": _jsonable(arr, alias)}
    cols = {a: _jsonable(v, a) for a, v in outputs.items()}
    return {"predictions": [{a: cols[a][i] for a in cols} for i in range(batch)]}
