"""TF Serving's REST predict requests: a JSON body → `instances` (row) / `inputs`
(columnar) → numpy arrays of the signature's dtypes, decoded in bulk. Pure, unit-testable.

When the bulk decode refuses a request, rest_fill finds TF Serving's own error text;
outputs are written back as JSON by rest_encode."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2

from .errors import ServingError, invalid_argument
from .example_json import _value_text
from .rest_fill import _INT_RANGE, _is_b64, _is_object, json_fill_error
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
