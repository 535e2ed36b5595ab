"""TF Serving's REST classify/regress JSON (json_tensor.cc): a request object
`{"signature_name", "context", "examples"}` → an `Input` of tf.Examples, and results
→ `{"results": ...}` text. Pure, so every conversion rule and error text is
unit-testable; numbers are written the way TF Serving writes them, not as Python does."""

from __future__ import annotations

import base64
import binascii
import math
from decimal import Decimal
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from .errors import invalid_argument

_FLOAT_MAX = float(np.finfo(np.float32).max)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1


# ------------------------------------------------------------ JSON text as rapidjson writes it


def _json_type(val: Any) -> str:
    """JsonTypeString: rapidjson's type names used in error messages."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def _grisu(x: float) -> str:
    """rapidjson's Writer::Double: shortest digits, laid out by its Prettify rules."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "-Infinity" if x < 0 else "Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    t = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0") or "0"
    k = int(t.exponent) + len(t.digits) - len(digits)
    if digits == "0":
        return sign + "0.0"
    n = len(digits)
    kk = n + k  # position of the decimal point
    if 0 <= k and kk <= 21:
        return sign + digits + "0" * k + ".0"
    if 0 < kk <= 21:
        return sign + digits[:kk] + "." + digits[kk:]
    if -6 < kk <= 0:
        return sign + "0." + "0" * -kk + digits
    if kk < -324:
        return sign + "0.0"
    mantissa = digits if n == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mantissa}e{kk - 1}"


def _escape(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04X}"))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def pretty(val: Any, level: int = 0) -> str:
    """rapidjson PrettyWriter output (4-space indent), as TF Serving echoes request
    JSON in its error messages."""
    pad, inner = "    " * level, "    " * (level + 1)
    if isinstance(val, dict):
        if not val:
            return "{}"
        items = [f"{inner}{_escape(str(k))}: {pretty(v, level + 1)}" for k, v in val.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(val, list):
        if not val:
            return "[]"
        return "[\n" + ",\n".join(inner + pretty(v, level + 1) for v in val) + "\n" + pad + "]"
    if isinstance(val, str):
        return _escape(val)
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, float):
        return _grisu(val)
    return str(val)


def _value_text(val: Any) -> str:
    """JsonValueToString: the whole request document for FormatError messages."""
    try:
        return pretty(val)
    except RecursionError:  # deeper than Python can print: say so, do not fail the request
        return "<too deeply nested to print>"


def write_decimal(x: float, float32: bool) -> str:
    """WriteDecimal: six significant digits when they round-trip, else full precision;
    whole numbers get `.0`; non-finite values are NaN / Infinity / -Infinity."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "-Infinity" if x < 0 else "Infinity"
    text = f"{x:g}"
    back = float(np.float32(text)) if float32 else float(text)
    if back != x:
        text = f"{x:.{9 if float32 else 17}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


# ------------------------------------------------------------ request


def _format_error(doc: Any, *parts: str) -> Exception:
    return invalid_argument(f"JSON Value: {_value_text(doc)} " + "".join(parts))


def _kind_error(name: str, feature: feature_pb2.Feature) -> Exception:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind") or "", "UNKNOWN")
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _of_kind(feature: feature_pb2.Feature, kind: str) -> bool:
    return feature.WhichOneof("kind") in (None, kind)


def _b64(val: dict) -> bytes:
    text = val["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _add_value(val: Any, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature: the JSON type picks the list (a decimal → float, an integer
    → int64, true/false → int64 1/0, a string or {"b64": ...} → bytes)."""
    if val is None or isinstance(val, list) or (isinstance(val, dict) and not _is_b64(val)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(val)}")
    if isinstance(val, bool):
        if not _of_kind(feature, "int64_list"):
            raise _kind_error(name, feature)
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, dict | str):
        if not _of_kind(feature, "bytes_list"):
            raise _kind_error(name, feature)
        feature.bytes_list.value.append(_b64(val) if isinstance(val, dict) else val.encode("utf-8"))
    elif isinstance(val, int) and _INT64[0] <= val <= _UINT64_MAX:
        if not _of_kind(feature, "int64_list"):
            raise _kind_error(name, feature)
        if val > _INT64[1]:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.append(val)
    else:  # a decimal, or an integer too large for 64 bits (rapidjson reads those as doubles)
        if not _of_kind(feature, "float_list"):
            raise _kind_error(name, feature)
        x = _to_double(val)
        if math.isfinite(x) and abs(x) > _FLOAT_MAX:
            raise invalid_argument(
                f"Cannot convert JSON value: {write_decimal(x, False)} to float without loss of precision.")
        feature.float_list.value.append(x)


def _to_double(val: Any) -> float:
    try:
        return float(val)
    except OverflowError:
        return math.inf if val > 0 else -math.inf


def _is_b64(val: dict) -> bool:
    return len(val) == 1 and isinstance(val.get("b64"), str)


def make_example(val: Any, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject: each key a feature, a value or a flat list of values."""
    if not isinstance(val, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(val)}")
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def fill_request(doc: Any, request: classification_pb2.ClassificationRequest
                 | regression_pb2.RegressionRequest) -> None:
    """FillClassificationRequestFromJson / FillRegressionRequestFromJson on a parsed body:
    signature_name, the optional `context` Example, and the `examples` list."""
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    if "signature_name" in doc:
        if not isinstance(doc["signature_name"], str):
            raise invalid_argument(f"JSON Value: {_value_text(doc)} not formatted correctly. "
                                   "'signature_name' key must be a string value.")
        request.model_spec.signature_name = doc["signature_name"]
    inp: input_pb2.Input = request.input
    has_context = "context" in doc
    if has_context:
        make_example(doc["context"], inp.example_list_with_context.context)
    if "examples" not in doc:
        # TF Serving says "classify" for regress requests too
        raise _format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = inp.example_list_with_context.examples if has_context else inp.example_list.examples
    for val in examples:
        make_example(val, target.add())
