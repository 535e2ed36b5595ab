"""TF Serving's REST JSON formats: request `instances` (row) / `inputs` (columnar)
→ numpy arrays, and outputs → `predictions` / `outputs`. Pure, unit-testable."""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from .errors import ServingError, invalid_argument
from .example_json import _json_type, _value_text, write_decimal
from .rest_json import Body, rapidjson_parse_error
from .tensors import SignatureSpec, TensorSpec, check_arrays, dtype_name, numpy_dtype

# Python objects json.loads and np.array make per JSON value, upper bound (a float is 24
# bytes, a list slot 8, a one-element list 64); measured: `[[0.25], ...]` bodies took ≈24×
# their size through the whole predict path before this estimate bounded them.
_BYTES_PER_VALUE = 96


_COUNT_WINDOW = 1 << 16  # the count's own temporaries stay this small (they are not charged)


def _json_values(body: Body) -> int:
    """Commas and opening brackets: one per JSON value at most, minus one."""
    if isinstance(body, bytes | bytearray):
        return body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    view = np.frombuffer(body, np.uint8)
    try:  # window by window: no temporary as large as the body
        return 1 + sum(int(np.count_nonzero(view[i:i + _COUNT_WINDOW] == ch))
                       for i in range(0, view.size, _COUNT_WINDOW) for ch in b",[{")
    finally:
        del view  # the mapping can be closed only when no view of it is left


def parse_cost(body: Body) -> int:
    """Bytes that parsing and converting `body` may allocate (beyond the body itself),
    counted without parsing: every JSON value is separated by `,` or opened by `[`/`{`."""
    return 2 * len(body) + _BYTES_PER_VALUE * _json_values(body)


def parse_json(body: Body) -> Any:
    """Any JSON document, or TF Serving's parse error (json_tensor.cc ParseJson: RapidJSON's
    message and byte offset). Never a Python exception: nesting past the recursion limit
    and over-long integers are parse errors too."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(str(body, "utf-8"))
    except UnicodeDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except json.JSONDecodeError as exc:
        where = rapidjson_parse_error(body) or f"{exc.msg} at offset: {exc.pos}"
        raise invalid_argument(f"JSON Parse error: {where}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise invalid_argument(f"JSON Parse error: {exc}") from None


def _format_error(doc: Any, text: str) -> ServingError:
    """json_tensor.cc FormatError: the whole document, pretty-printed, then the text."""
    return invalid_argument(f"JSON Value: {_value_text(doc)} {text}")


def parse_body(body: Body) -> dict[str, Any]:
    """JSON object or TF Serving's error (ParseJson: `... Is not object`)."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """FillSignature: the optional `signature_name`, which must be a string."""
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise _format_error(doc, "not formatted correctly. 'signature_name' key must be a string value.")
    return sig


def request_format(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(signature_name, 'instances' | 'inputs') with FillPredictRequestFromJson's key rules
    (TF Serving checks them after resolving the model and its signature)."""
    sig = signature_name(doc)
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows:
        if has_cols:
            raise _format_error(doc, "Not formatted correctly expecting only one of 'inputs' or "
                                     "'instances' keys to exist ")
        if not isinstance(doc["instances"], list):
            raise _format_error(doc, "Excepting 'instances' to be an list/array")
        if not doc["instances"]:
            raise _format_error(doc, "No values in 'instances' array")
        return sig, "instances"
    if has_cols:
        return sig, "inputs"
    raise invalid_argument("Missing 'inputs' or 'instances' key")


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


# the largest integer each type holds exactly (json_tensor.cc IsLosslessDecimal)
_EXACT_INT = {np.dtype(np.float32): (1 << 24) - 1, np.dtype(np.float64): (1 << 53) - 1}
# RapidJSON's IsInt / IsInt64 / IsUint / IsUint64, by the dtype AddValueToTensor asks for
_INT_RANGE = {types_pb2.DT_INT32: (-(1 << 31), (1 << 31) - 1), types_pb2.DT_INT16: (-(1 << 31), (1 << 31) - 1),
              types_pb2.DT_INT8: (-(1 << 31), (1 << 31) - 1), types_pb2.DT_UINT8: (-(1 << 31), (1 << 31) - 1),
              types_pb2.DT_INT64: (-(1 << 63), (1 << 63) - 1), types_pb2.DT_UINT32: (0, (1 << 32) - 1),
              types_pb2.DT_UINT64: (0, (1 << 64) - 1)}


def to_array(spec: TensorSpec, value: Any) -> np.ndarray:
    """One input's JSON value → array of the signature's dtype, in bulk. Anything TF
    Serving would refuse fails here; the caller then finds TF Serving's own message."""
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
    bad = (want.kind == "b") != (arr.dtype.kind == "b") or (want.kind in "iu" and arr.dtype.kind not in "iu")
    if not bad and arr.dtype.kind in "iu":
        if want in _EXACT_INT:
            bad = int(np.max(np.abs(arr.astype(np.float64)))) > _EXACT_INT[want]
        elif spec.dtype in _INT_RANGE:
            lo, hi = _INT_RANGE[spec.dtype]
            bad = int(arr.min()) < lo or int(arr.max()) > hi
    if bad:
        raise invalid_argument(f"Failed to process input '{spec.alias}': {dtype_name(spec.dtype)} expected")
    try:
        with np.errstate(over="raise", invalid="raise"):
            return arr.astype(want, casting="unsafe") if want.kind != "f" else arr.astype(want)
    except (OverflowError, FloatingPointError) as exc:
        raise invalid_argument(f"Failed to process input '{spec.alias}': {exc}") from None


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _is_object(val: Any) -> bool:
    """IsElementObject: a JSON object that is not a {"b64": ...} value."""
    return isinstance(val, dict) and not _is_b64(val)


def decode_request(spec: SignatureSpec, doc: Mapping[str, Any], fmt: str) -> dict[str, np.ndarray]:
    """Inputs of a REST predict request as validated arrays, decoded in bulk; when that
    fails, the error is the one TF Serving's FillPredictRequestFromJson reports."""
    if not spec.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}")
    try:
        arrays = _fast_decode(spec, doc, fmt)
    except ServingError as err:
        raise (json_fill_error(spec, doc, fmt) or err) from None
    check_arrays(spec, arrays)
    return arrays


class _Mismatch(Exception):
    """The request's structure is not what the fast path decodes: let TF's rules say why."""


def _fast_decode(spec: SignatureSpec, doc: Mapping[str, Any], fmt: str) -> dict[str, np.ndarray]:
    names = spec.inputs
    only = next(iter(names.values()))
    if fmt == "instances":
        rows = doc["instances"]
        if not isinstance(rows[0], dict) and len(names) > 1:
            raise invalid_argument("instances is a plain list, but expecting list of objects as multiple "
                                   "input tensors required as per tensorinfo_map")
        try:
            if _is_object(rows[0]):
                if any(not _is_object(r) or r.keys() != names.keys() for r in rows):
                    raise _Mismatch
                return {a: to_array(s, [r[a] for r in rows]) for a, s in names.items()}
            if len(names) > 1 or any(_is_object(r) for r in rows):
                raise _Mismatch
        except _Mismatch:
            raise invalid_argument("instances do not match the signature's inputs") from None
        return {only.alias: to_array(only, rows)}
    cols = doc["inputs"]
    if not isinstance(cols, dict) or _is_b64(cols):
        if len(names) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple "
                                   "input tensors required as per tensorinfo_map")
        return {only.alias: to_array(only, cols)}
    for alias in sorted(names):
        if alias not in cols:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
    return {a: to_array(s, cols[a]) for a, s in names.items()}  # other keys are ignored, as in TF


# ------------------------------------------------------------ TF Serving's own checks, value by value


class _FillError(Exception):
    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.message, self.code = message, code

    def status_text(self) -> str:  # absl::Status::ToString()
        return f"{self.code.name}: {self.message}"


_F32_MAX = float(np.finfo(np.float32).max)


def _value_string(val: Any) -> str:
    """JsonValueToString: decimals through WriteDecimal (as float when they fit one)."""
    if isinstance(val, float):
        if math.isfinite(val) and abs(val) <= _F32_MAX:
            return write_decimal(float(np.float32(val)), True)
        return write_decimal(val, False)
    return _value_text(val)


def _type_error(val: Any, dt: int) -> _FillError:
    return _FillError(f"JSON Value: {_value_string(val)} Type: {_json_type(val)} is not of expected type: "
                      f"{dtype_name(dt)}")


def _lossless(val: int | float, exact: int, limit: float) -> bool:
    try:
        d = float(val)
    except OverflowError:
        return True
    if not math.isfinite(d):
        return True
    if isinstance(val, int) and -(1 << 63) <= val <= (1 << 64) - 1:
        return abs(val) <= exact
    return -limit <= d <= limit


def _add_value(val: Any, dt: int) -> None:
    """AddValueToTensor: the JSON type each dtype takes."""
    number = isinstance(val, int | float) and not isinstance(val, bool)
    if dt in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not number:
            raise _type_error(val, dt)
        f32 = dt == types_pb2.DT_FLOAT
        if not _lossless(val, (1 << 24) - 1 if f32 else (1 << 53) - 1, _F32_MAX if f32 else sys.float_info.max):
            raise _FillError(f"Cannot convert JSON value: {_value_string(val)} to {'float' if f32 else 'double'} "
                             "without loss of precision.")
    elif dt in _INT_RANGE:
        lo, hi = _INT_RANGE[dt]
        if not (number and isinstance(val, int) and lo <= val <= hi):
            raise _type_error(val, dt)
    elif dt == types_pb2.DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dt)
    elif dt == types_pb2.DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dt)
    else:
        raise _FillError(f"Conversion of JSON Value: {_value_string(val)} to type: {dtype_name(dt)}",
                         grpc.StatusCode.UNIMPLEMENTED)


def _dense_shape(val: Any) -> list[int]:
    """GetDenseTensorShape: the sizes along the first element of each level."""
    dims = []
    while isinstance(val, list):
        dims.append(len(val))
        if not val:
            break
        val = val[0]
    return dims


def _fill(val: Any, level: int, dt: int, dims: list[int]) -> int:
    """FillTensorProto: the number of values, or its error."""
    rank = len(dims)
    if not isinstance(val, list):
        if level != rank:
            raise _FillError(f"JSON Value: {_value_string(val)} found at incorrect level: {level + 1} "
                             f"in the JSON DOM. Expected at level: {rank}")
        if isinstance(val, dict):
            if dt != types_pb2.DT_STRING:
                raise _type_error(val, dt)
            if not _is_b64(val):
                raise _FillError(f"JSON Value: {_value_string(val)} not formatted correctly for base64 data")
            try:
                text = val["b64"]
                base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise _FillError("Unable to base64 decode") from None
        else:
            _add_value(val, dt)
        return 1
    if level >= rank:
        raise _FillError(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != dims[level]:
        raise _FillError(f"Encountered list at unexpected size: {len(val)} at level: {level} "
                         f"expected size: {dims[level]}")
    return sum(_fill(v, level + 1, dt, dims) for v in val)


def _shape_string(dims: list[int]) -> str:
    return "[" + ",".join(map(str, dims)) + "]"


def json_fill_error(spec: SignatureSpec, doc: Mapping[str, Any], fmt: str) -> ServingError | None:
    """The first error FillTensorMapFromInstancesList / FillTensorMapFromInputsMap report
    for this request (json_tensor.cc), value by value; None when they accept it."""
    try:
        _check_fill(spec, doc, fmt)
    except _FillError as err:
        return ServingError(err.code, err.message)
    except RecursionError:
        return None
    return None


def _check_fill(spec: SignatureSpec, doc: Mapping[str, Any], fmt: str) -> None:
    names = spec.inputs
    if fmt == "inputs":
        val = doc["inputs"]
        if not isinstance(val, dict) or _is_b64(val):
            if len(names) > 1:
                raise _FillError("inputs is a plain value/list, but expecting an object as multiple "
                                 "input tensors required as per tensorinfo_map")
            only = next(iter(names.values()))
            _fill(val, 0, only.dtype, _dense_shape(val))
            return
        for alias in sorted(names):
            if alias not in val:
                raise _FillError(f"Missing named input: {alias} in 'inputs' object.")
            _fill(val[alias], 0, names[alias].dtype, _dense_shape(val[alias]))
        return
    rows = doc["instances"]
    if not isinstance(rows[0], dict) and len(names) > 1:
        raise _FillError("instances is a plain list, but expecting list of objects as multiple "
                         "input tensors required as per tensorinfo_map")
    objects = _is_object(rows[0])
    input_names = sorted(names)
    sizes: dict[str, tuple[int, list[int]]] = {}

    def add(item: Any, name: str) -> None:  # AddInstanceItem
        if name not in names:
            raise _FillError(f"JSON object: does not have named input: {name}")
        dims = _dense_shape(item)
        size = _fill(item, 0, names[name].dtype, dims)
        if name not in sizes:
            sizes[name] = (size, dims)
        elif sizes[name][0] != size:
            raise _FillError(f"Expecting tensor size: {sizes[name][0]} but got: {size}")
        elif sizes[name][1] != dims:
            raise _FillError(f"Expecting shape {_shape_string(sizes[name][1])} but got: {_shape_string(dims)}")

    for i, elem in enumerate(rows):
        if objects:
            if not _is_object(elem):
                raise _FillError(f"Expecting object but got list at item {i} of input list")
            for key, value in elem.items():
                try:
                    add(value, key)
                except _FillError as err:
                    raise _FillError(f"Failed to process element: {i} key: {key} of 'instances' list. "
                                     f"Error: {err.status_text()}") from None
            if set(elem) != set(names):
                raise _FillError(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                 f"{_value_text(elem)} must only have keys: {','.join(input_names)}")
        else:
            if _is_object(elem):
                raise _FillError(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, input_names[0] if len(names) > 1 else next(iter(names)))
            except _FillError as err:
                raise _FillError(f"Failed to process element: {i} of 'instances' list. "
                                 f"Error: {err.status_text()}") from None


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
