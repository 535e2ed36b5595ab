"""REST API on TF Serving's paths, with `{"error": ...}` bodies and the same
status mapping as gRPC; also serves Prometheus metrics at the monitoring path.

It has no admin operations (no reload), so --admin_token_file does not apply: model
status (GET /v1/models/NAME), metadata and predict stay open, as Predict does on gRPC."""

from __future__ import annotations

import logging
import mmap
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    regression_pb2,
)

from .errors import ServingError, invalid_argument
from .example_json import fill_request
from .grpc_service import model_metadata, model_status
from .inference import InferenceRunner
from .limits import ByteBudget, Charge, Ticket
from .metrics import Metrics, api_label
from .predict import Predictor
from .rest_codec import (
    decode_request,
    parse_body,
    parse_cost,
    parse_json,
    request_format,
    signature_name,
)
from .rest_encode import encode_response
from .rest_json import (
    Body,
    classification_body,
    error_body,
    metadata_body,
    predict_body,
    proto_json,
    regression_body,
)
from .servable import DEFAULT_SIGNATURE

log = logging.getLogger("modelserver.rest")

CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Content-Type"))

# http_rest_api_util.cc: both patterns are case-insensitive ((?i)) and fully matched; the
# method and `metadata` are then compared case-sensitively, as TF Serving does.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_API_PATH = re.compile(r"/v1/.*", re.I)  # HttpRestApiHandler::kPathRegex
_INT64_MAX = (1 << 63) - 1


def _decode_arg(text: str) -> str:
    """DecodeArg: curl_easy_unescape (%XX only; `+` stays)."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "replace")


class RestApp:
    """Request routing and handling, independent of the HTTP server plumbing."""

    def __init__(self, predictor: Predictor, metrics: Metrics | None, metrics_path: str | None,
                 max_body_bytes: int | None = None, timeout_ms: int = 0,
                 budget: ByteBudget | None = None, cors: bool = False):
        self.predictor = predictor
        self.inference = InferenceRunner(predictor)
        self.cors = cors  # --rest_api_enable_cors_support
        self.budget = budget  # the in-flight budget shared with gRPC
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.max_body_bytes = max_body_bytes
        # --rest_api_timeout_in_ms: bounds each predict run as TF Serving's RunOptions
        # timeout does (expired: 504 {"error": "Timed out waiting for notification"});
        # status and metadata calls are not bounded; <=0 means no timeout
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None

    def handle(self, method: str, path: str, body: Body, ticket: Ticket) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request, routed as HttpRestApiHandler
        ProcessRequest / ParseModelInfo route it. `ticket` holds the body's bytes in the
        in-flight budget (charged while it was received); parsing and running add to it."""
        path = path.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET" and self.metrics:
            return 200, "text/plain", self.metrics.render().encode()
        if not _API_PATH.fullmatch(path):  # no handler for the path: the HTTP server's 404
            return _error(ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}"))
        start = time.perf_counter()
        name, verb = "", ""
        try:
            m = (_PREDICT_PATH.fullmatch(path) if method == "POST"
                 else _STATUS_PATH.fullmatch(path) if method == "GET" else None)
            malformed = invalid_argument(f"Malformed request: {method} {path}")
            raw_name, raw_version, raw_label, tail = m.groups() if m else ("", None, None, None)
            name = _decode_arg(raw_name) if raw_name else ""
            version = None
            if raw_version:
                if int(raw_version) > _INT64_MAX:
                    raise invalid_argument(f"Failed to convert version: {raw_version} to numeric.")
                version = int(raw_version)
            label = _decode_arg(raw_label) if raw_label else None
            if m is None:
                raise malformed
            if method == "GET":
                if not name:
                    raise invalid_argument("Missing model name in request.")
                payload = (self._metadata(name, version, label) if tail == "metadata"
                           else self._status(name, version, label))
                return 200, "application/json", payload
            verb = tail or ""
            if verb == "predict":
                payload = self._predict(name, version, label, body, ticket)
            elif verb in ("classify", "regress"):
                payload = self._classify_regress(verb, name, version, label, body, ticket)
            else:  # matched case-insensitively, dispatched case-sensitively
                raise malformed
            if self.metrics:
                self.metrics.observe_rest(name, verb, time.perf_counter() - start)
            return 200, "application/json", payload
        except ServingError as err:
            return _error(err)

    def _status(self, name, version, label) -> bytes:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        _set_target(req.model_spec, version, label)
        resp = model_status(self.predictor.manager, req)
        return proto_json(json_format.MessageToDict(
            resp, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)).encode("utf-8")

    def _metadata(self, name, version, label) -> bytes:
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = name
        _set_target(req.model_spec, version, label)
        resp = model_metadata(self.predictor.manager, req)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)
        # TF Serving prints with always_print_primitive_fields: "defaults": {}, "name": "",
        # "unknown_rank": false appear even at their default values
        return metadata_body(
            {"name": name, "signature_name": "", "version": str(resp.model_spec.version.value)},
            json_format.MessageToDict(sig_map, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True))

    def _predict(self, name, version, label, body: Body, received: Ticket) -> bytes:
        ticket = self._admit(body, received)
        try:
            return self._predict_admitted(name, version, label, body, ticket.grow)
        finally:
            ticket.release()

    def _classify_regress(self, verb: str, name, version, label, body: Body, received: Ticket) -> bytes:
        """`:classify` / `:regress`: JSON examples → Input → the same run as gRPC; the body,
        its parse and the Example protos are charged before parsing, the example tensor
        (context copied into every example) before it is built."""
        ticket = self._admit(body, received, extra=EXAMPLE_FACTOR * len(body))
        try:
            request: classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest
            request = (classification_pb2.ClassificationRequest() if verb == "classify"
                       else regression_pb2.RegressionRequest())
            request.model_spec.name = name
            _set_target(request.model_spec, version, label)
            fill_request(parse_json(body), request)
            if isinstance(request, classification_pb2.ClassificationRequest):
                with api_label("Classify"):
                    response = self.inference.classify(request, ticket.grow, self.timeout)
                return classification_body(response.result)
            with api_label("Regress"):
                regression = self.inference.regress(request, ticket.grow, self.timeout)
            return regression_body(regression.result)
        finally:
            ticket.release()

    def _admit(self, body: Body, received: Ticket, extra: int = 0) -> Ticket:
        """Charge what parsing the body may take on top of the body itself (`received`
        already holds it: the HTTP layer charged it as it arrived); refuse what can never
        fit (413) or does not fit now (429), before parsing."""
        cost = parse_cost(body) + extra
        if self.budget is not None and received.nbytes + cost > self.budget.limit:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               _too_costly(received.nbytes + cost, self.budget.limit), http_status=413)
        received.grow(cost)
        return received

    def _predict_admitted(self, name, version, label, body: Body, charge: Charge) -> bytes:
        """FillPredictRequestFromJson's order: parse, signature_name, the model and its
        signature (GetInfoMap), then the inputs; then Predict."""
        doc = parse_body(body)
        sig = signature_name(doc)
        servable = self.predictor.manager.resolve(name, version, label)
        key = sig or DEFAULT_SIGNATURE
        if key not in servable.signature_defs:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        fmt = "instances"

        def decode(spec):
            nonlocal fmt
            _, fmt = request_format(doc)
            return decode_request(spec, doc, fmt)

        with api_label("Predict"):
            _, _, outputs = self.predictor.predict(name, version, label, sig, decode,
                                                   timeout=self.timeout, charge=charge)
        return predict_body(encode_response(outputs, fmt))


# Example protos (and their serialized copies) built from a JSON body, per body byte
EXAMPLE_FACTOR = 4
# A body is read (and charged to the in-flight budget) this many bytes at a time
RECEIVE_PART = 1 << 20


def _set_target(model_spec, version, label) -> None:
    if version is not None:
        model_spec.version.value = version
    elif label is not None:
        model_spec.version_label = label


def _too_costly(cost: int, limit: int) -> str:
    return (f"Request body would take about {cost} bytes to parse, over the limit of {limit} "
            "bytes; send fewer rows per request, or large tensors over gRPC")


def _body_refused(length: int, limit: int) -> str:
    return (f"Request body of {length} bytes refused while it was received: the in-flight "
            f"requests already hold the {limit} bytes of --max_inflight_request_bytes; retry later")


def _error(err: ServingError) -> tuple[int, str, bytes]:
    return err.http_status, "application/json", error_body(err.message)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body go out as two writes; with Nagle on, the body
    # waited for the client's delayed ACK of the headers: 44 ms per keep-alive request
    disable_nagle_algorithm = True
    app: RestApp  # set on the subclass
    slots: threading.BoundedSemaphore  # set on the subclass

    def _serve(self, method: str) -> None:
        try:
            lengths = set(self.headers.get_all("Content-Length") or [])
            if len(lengths) > 1:  # RFC 9112 6.3: differing lengths are unrecoverable, never "the first wins"
                raise ValueError
            length = int(next(iter(lengths), "") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            bad = error_body("Invalid Content-Length header")
            self._send(400, "application/json", bad, close=True)
            return
        limit = self.app.max_body_bytes
        if limit is not None and length > limit:
            self._discard(length)  # read it so the client is not cut off mid-send
            err = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Request body of {length} bytes exceeds the limit of {limit} bytes")
            self._send(413, "application/json", error_body(err.message), close=True)
            return
        ticket = self.app.budget.admit(0) if self.app.budget is not None else Ticket(None, 0)
        try:
            try:
                body = self._receive(length, ticket)
            except ServingError as err:  # the in-flight budget is full: stop reading, 429
                self._send(err.http_status, "application/json", error_body(err.message), close=True)
                return
            if method == "OPTIONS" and self.app.cors:  # CORS preflight
                self._send(204, "text/plain", b"")
                return
            try:
                with self.slots:  # at most --rest_api_num_threads requests are handled at once
                    status, ctype, payload = self.app.handle(method, self.path, body, ticket)
            except Exception as exc:  # never leave a client without an answer
                log.exception("REST handler failed")
                status, ctype, payload = 500, "application/json", error_body(str(exc))
            finally:
                if isinstance(body, mmap.mmap):
                    body.close()  # its pages go back to the OS now
        finally:
            ticket.release()
        self._send(status, ctype, payload)

    def _receive(self, length: int, ticket: Ticket) -> Body:
        """The body, each part charged to the in-flight budget *before* it is read, so
        slow clients holding large bodies open cannot take more than the budget between
        them (RESOURCE_EXHAUSTED / 429 as soon as the next part does not fit).

        A body over one part goes into an anonymous mapping: its pages become resident
        only as bytes arrive and go back to the OS when it is closed. (A growing heap
        buffer is copied on realloc and kept by malloc afterwards: 12 slow clients took
        1.44x the budget that way.)"""
        if length <= RECEIVE_PART:
            self._charge(ticket, length, length)
            return self.rfile.read(length) if length else b""
        body = mmap.mmap(-1, length)
        got = 0
        try:
            with memoryview(body) as view:
                while got < length:
                    part = min(length - got, RECEIVE_PART)
                    self._charge(ticket, part, length - got)
                    n = self.rfile.readinto(view[got:got + part])
                    if not n:  # the client went away mid-body: what came is all there is
                        break
                    got += n
        except ServingError:
            body.close()
            raise
        if got < length:
            short = body[:got]
            body.close()
            return short
        return body

    def _charge(self, ticket: Ticket, part: int, remaining: int) -> None:
        """Charge the next `part` bytes, or read and drop the `remaining` ones (so the client
        reads the 429, not a reset) and refuse."""
        try:
            ticket.grow(part)
        except ServingError:
            self._discard(remaining)
            limit = self.app.budget.limit if self.app.budget is not None else 0
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, _body_refused(remaining, limit)) from None

    def _discard(self, length: int, cap: int = 64 << 20) -> None:
        remaining = min(length, cap)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def _send(self, status: int, ctype: str, payload: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if self.app.cors:
            for key, value in CORS_HEADERS:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_PUT(self):  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self):  # noqa: N802
        self._serve("DELETE")

    def do_OPTIONS(self):  # noqa: N802
        self._serve("OPTIONS")

    def log_message(self, fmt, *args):  # quiet: access logs would dominate the server log
        pass


class RestServer:
    """ThreadingHTTPServer running RestApp in a background thread."""

    def __init__(self, app: RestApp, host: str, port: int, threads: int = 0):
        slots = threading.BoundedSemaphore(threads if threads > 0 else 4 * (os.cpu_count() or 1))
        handler = type("Handler", (_Handler,), {"app": app, "slots": slots})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="rest", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
