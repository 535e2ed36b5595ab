"""TF Serving's own checks of a REST predict request, value by value (json_tensor.cc
FillTensorMapFromInstancesList / FillTensorMapFromInputsMap), for their exact error texts.

Kept apart from rest_codec's bulk decode, which every request takes: this slower path
runs only once that decode has refused a request, to say why as TF Serving would."""

from __future__ import annotations

import base64
import binascii
import math
import sys
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2

from .errors import ServingError
from .example_json import _json_type, _value_text, write_decimal
from .tensors import SignatureSpec, dtype_name

# RapidJSON's IsInt / IsInt64 / IsUint / IsUint64, by the dtype AddValueToTensor asks for
_INT_RANGE = {types_pb2.DT_INT32: (-(1 << 31), (1 << 31) - 1), types_pb2.DT_INT16: (-(1 << 31), (1 << 31) - 1),
              types_pb2.DT_INT8: (-(1 << 31), (1 << 31) - 1), types_pb2.DT_UINT8: (-(1 << 31), (1 << 31) - 1),
              types_pb2.DT_INT64: (-(1 << 63), (1 << 63) - 1), types_pb2.DT_UINT32: (0, (1 << 32) - 1),
              types_pb2.DT_UINT64: (0, (1 << 64) - 1)}


def _is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _is_object(val: Any) -> bool:
    """IsElementObject: a JSON object that is not a {"b64": ...} value."""
    return isinstance(val, dict) and not _is_b64(val)


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
