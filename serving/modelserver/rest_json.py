"""REST response text laid out byte for byte as TF Serving writes it, and RapidJSON's
parse-error messages for bodies that do not parse.

* predict / classify / regress answers and `{"error": ...}` bodies come from RapidJSON's
  PrettyWriter in TF Serving (json_tensor.cc): 4-space indent, arrays inside one row on a
  single line (`kFormatSingleLineArray`), no trailing newline;
* model status and metadata come from protobuf's JSON printer with `add_whitespace`
  (http_rest_api_util.cc ToJsonString): 1-space indent and a trailing newline, metadata
  glued together from two printed messages exactly as ToJsonString concatenates them;
* `JSON Parse error: <RapidJSON message> at offset: <byte>` (json_tensor.cc ParseJson,
  RapidJSON GetParseError_En) for a body Python's parser refuses.

Large numeric outputs are laid out by `json.dumps` (C speed) and re-indented, never
value by value in Python."""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from typing import Any

from tensorflow_serving.apis import classification_pb2, regression_pb2

from .errors import invalid_argument
from .example_json import _escape, write_decimal

INDENT = 4  # rapidjson::PrettyWriter's default indent
Body = bytes | bytearray | mmap.mmap  # a large REST body is received into a mapping (rest.py)


def _pad(depth: int) -> str:
    return " " * (INDENT * depth)


def _numeric(value: Any) -> bool:
    """A (nested) list from ndarray.tolist() of numbers/bools: json.dumps lays it out."""
    while isinstance(value, list):
        if not value:
            return True
        value = value[0]
    return isinstance(value, int | float)


def write_value(value: Any, depth: int, single_line: bool) -> str:
    """One value as PrettyWriter writes it when `depth` containers are open; in
    single-line mode arrays stay on one line (objects never do)."""
    if isinstance(value, list):
        if not value:
            return "[]"
        if _numeric(value):
            if single_line:
                return json.dumps(value)
            return json.dumps(value, indent=INDENT).replace("\n", "\n" + _pad(depth))
        if single_line:
            return "[" + ", ".join(write_value(v, depth + 1, True) for v in value) + "]"
        inner = "\n" + _pad(depth + 1)
        return ("[" + ",".join(inner + write_value(v, depth + 1, False) for v in value)
                + "\n" + _pad(depth) + "]")
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = "\n" + _pad(depth + 1)
        return ("{" + ",".join(f"{inner}{_escape(str(k))}: {write_value(v, depth + 1, single_line)}"
                               for k, v in value.items()) + "\n" + _pad(depth) + "}")
    if isinstance(value, str):
        return _escape(value)
    return json.dumps(value)


def predict_body(doc: Mapping[str, Any]) -> bytes:
    """MakeRowFormatJsonFromTensors / MakeColumnarFormatJsonFromTensors layout of
    `{"predictions": ...}` / `{"outputs": ...}` (from rest_encode.encode_response)."""
    if "predictions" in doc:
        rows = doc["predictions"]
        if rows and isinstance(rows[0], dict):  # several outputs: one object per row
            items = []
            for row in rows:
                keys = ",".join(f"\n{_pad(3)}{_escape(k)}: {write_value(v, 3, True)}" for k, v in row.items())
                items.append(f"\n{_pad(2)}{{{keys}\n{_pad(2)}}}")
            body = "[" + ",".join(items)
        else:  # one output: the rows follow each other on the key's line
            body = "[" + ", ".join(write_value(v, 2, True) for v in rows)
        text = '{\n    "predictions": ' + body + "\n    ]\n}"
    else:
        text = '{\n    "outputs": ' + write_value(doc["outputs"], 1, False) + "\n}"
    return text.encode("utf-8")


def error_body(message: str) -> bytes:
    """MakeJsonFromStatus: `{"error": message}` through the PrettyWriter."""
    return ('{\n    "error": ' + _escape(message) + "\n}").encode("utf-8")


def classification_body(result: classification_pb2.ClassificationResult) -> bytes:
    """MakeJsonFromClassificationResult: each example's classes on one line."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = ("[" + ", ".join(f"[{_escape(c.label)}, {write_decimal(c.score, True)}]" for c in row.classes) + "]"
            for row in result.classifications)
    return ('{\n    "results": [' + ", ".join(rows) + "\n    ]\n}").encode("utf-8")


def regression_body(result: regression_pb2.RegressionResult) -> bytes:
    """MakeJsonFromRegressionResult: single-line mode stays on, so `]` closes on the line."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(write_decimal(r.value, True) for r in result.regressions)
    return ('{\n    "results": [' + values + "]\n}").encode("utf-8")


def proto_json(doc: Any) -> str:
    """protobuf's JSON printer with add_whitespace: 1-space indent, newline at the end."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def metadata_body(model_spec: Mapping[str, Any], signature_def_map: Mapping[str, Any]) -> bytes:
    """ToJsonString(GetModelMetadataResponse): two printed messages glued by hand."""
    return ("{\n" + '"model_spec":' + proto_json(model_spec) + ",\n" + '"metadata": {'
            + '"signature_def": ' + proto_json(signature_def_map) + "}\n" + "}\n").encode("utf-8")


# ------------------------------------------------------------ RapidJSON parse errors

_MESSAGES = {
    "empty": "The document is empty.",
    "root": "The document root must not be followed by other values.",
    "value": "Invalid value.",
    "name": "Missing a name for object member.",
    "colon": "Missing a colon after a name of object member.",
    "object": "Missing a comma or '}' after an object member.",
    "array": "Missing a comma or ']' after an array element.",
    "hex": "Incorrect hex digit after \\u escape in string.",
    "surrogate": "The surrogate pair in string is invalid.",
    "escape": "Invalid escape character in string.",
    "quote": "Missing a closing quotation mark in string.",
    "encoding": "Invalid encoding in string.",
    "fraction": "Miss fraction part in number.",
    "exponent": "Miss exponent in number.",
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_ESCAPES = frozenset(b'"\\/bfnrt')


class _Fail(Exception):
    def __init__(self, kind: str, offset: int):
        super().__init__(kind)
        self.kind, self.offset = kind, offset


class _Reader:
    """GenericReader's recursive descent (kParseNanAndInfFlag), only to locate an error:
    the byte offset and the kind RapidJSON would report. NUL reads as end of input."""

    def __init__(self, data: Body):
        self.data, self.pos = data, 0

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else 0

    def consume(self, ch: int) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def skip_ws(self) -> None:
        while self.peek() in (0x20, 0x0A, 0x0D, 0x09):
            self.pos += 1

    def document(self) -> None:
        self.skip_ws()
        if self.peek() == 0:
            raise _Fail("empty", self.pos)
        self.value()
        self.skip_ws()
        if self.peek() != 0:
            raise _Fail("root", self.pos)

    def value(self) -> None:
        c = self.peek()
        if c == ord("n"):
            self.literal(b"null")
        elif c == ord("t"):
            self.literal(b"true")
        elif c == ord("f"):
            self.literal(b"false")
        elif c == ord('"'):
            self.string()
        elif c == ord("{"):
            self.obj()
        elif c == ord("["):
            self.array()
        else:
            self.number()

    def literal(self, word: bytes) -> None:
        self.pos += 1
        for ch in word[1:]:
            if not self.consume(ch):
                raise _Fail("value", self.pos)

    def obj(self) -> None:
        self.pos += 1
        self.skip_ws()
        if self.consume(ord("}")):
            return
        while True:
            if self.peek() != ord('"'):
                raise _Fail("name", self.pos)
            self.string()
            self.skip_ws()
            if not self.consume(ord(":")):
                raise _Fail("colon", self.pos)
            self.skip_ws()
            self.value()
            self.skip_ws()
            if self.consume(ord(",")):
                self.skip_ws()
            elif self.consume(ord("}")):
                return
            else:
                raise _Fail("object", self.pos)

    def array(self) -> None:
        self.pos += 1
        self.skip_ws()
        if self.consume(ord("]")):
            return
        while True:
            self.value()
            self.skip_ws()
            if self.consume(ord(",")):
                self.skip_ws()
            elif self.consume(ord("]")):
                return
            else:
                raise _Fail("array", self.pos)

    def hex4(self, escape_at: int) -> int:
        value = 0
        for _ in range(4):
            c = self.peek()
            if c not in _HEX:
                raise _Fail("hex", escape_at)
            value = value * 16 + int(chr(c), 16)
            self.pos += 1
        return value

    def string(self) -> None:
        self.pos += 1
        while True:
            c = self.peek()
            if c == ord("\\"):
                escape_at = self.pos
                self.pos += 1
                e = self.peek()
                if e in _ESCAPES:
                    self.pos += 1
                elif e == ord("u"):
                    self.pos += 1
                    code = self.hex4(escape_at)
                    if 0xD800 <= code <= 0xDBFF:
                        if not (self.consume(ord("\\")) and self.consume(ord("u"))):
                            raise _Fail("surrogate", escape_at)
                        if not 0xDC00 <= self.hex4(escape_at) <= 0xDFFF:
                            raise _Fail("surrogate", escape_at)
                    elif 0xDC00 <= code <= 0xDFFF:
                        raise _Fail("surrogate", escape_at)
                else:
                    raise _Fail("escape", escape_at)
            elif c == ord('"'):
                self.pos += 1
                return
            elif c < 0x20:
                raise _Fail("quote" if c == 0 else "encoding", self.pos)
            else:
                self.pos += 1

    def number(self) -> None:
        self.consume(ord("-"))
        c = self.peek()
        if c == ord("0"):
            self.pos += 1
        elif ord("1") <= c <= ord("9"):
            while self.peek() in _DIGITS:
                self.pos += 1
        elif c in (ord("N"), ord("I")):
            ok = False
            if self.consume(ord("N")):
                ok = self.consume(ord("a")) and self.consume(ord("N"))
            elif self.consume(ord("I")):
                if self.consume(ord("n")) and self.consume(ord("f")):
                    ok = True
                    if self.peek() == ord("i") and not all(self.consume(ord(ch)) for ch in "inity"):
                        raise _Fail("value", self.pos)
            if not ok:
                raise _Fail("value", self.pos)
            return
        else:
            raise _Fail("value", self.pos)
        if self.consume(ord(".")):
            if self.peek() not in _DIGITS:
                raise _Fail("fraction", self.pos)
            while self.peek() in _DIGITS:
                self.pos += 1
        if self.consume(ord("e")) or self.consume(ord("E")):
            if not self.consume(ord("+")):
                self.consume(ord("-"))
            if self.peek() not in _DIGITS:
                raise _Fail("exponent", self.pos)
            while self.peek() in _DIGITS:
                self.pos += 1


def rapidjson_parse_error(body: Body) -> str | None:
    """`<message> at offset: <n>` as RapidJSON reports the first error in `body`, or
    None when RapidJSON would accept it."""
    try:
        _Reader(body).document()
    except _Fail as fail:
        return f"{_MESSAGES[fail.kind]} at offset: {fail.offset}"
    except RecursionError:
        return None
    return None
