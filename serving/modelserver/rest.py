"""REST API on TF Serving's paths, with `{"error": ...}` bodies and the same
status mapping as gRPC; also serves Prometheus metrics at the monitoring path.

It has no admin operations (no reload), so --admin_token_file does not apply: model
status (GET /v1/models/NAME), metadata and predict stay open, as Predict does on gRPC."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
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
from .example_json import classification_json, fill_request, regression_json
from .grpc_service import model_metadata, model_status
from .inference import InferenceRunner
from .limits import ByteBudget, Ticket
from .metrics import Metrics
from .predict import Predictor
from .rest_codec import (
    decode_request,
    encode_response,
    parse_body,
    parse_cost,
    parse_json,
    request_format,
)

log = logging.getLogger("modelserver.rest")

CORS_HEADERS = (("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                ("Access-Control-Allow-Headers", "Content-Type"))

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<metadata>metadata)|:(?P<verb>[A-Za-z]+))?/?$"
)


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

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        path = path.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET" and self.metrics:
            return 200, "text/plain; version=0.0.4", self.metrics.render().encode()
        m = _PATH.match(path)
        if not m or (method == "GET" and m["verb"]) or (method == "POST" and not m["verb"]) \
                or method not in ("GET", "POST"):
            return _error(ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}"))
        start = time.perf_counter()
        status = "OK"
        try:
            version = None
            if m["version"] is not None:
                if not m["version"].isdigit():
                    raise invalid_argument(f"Failed to convert version: {m['version']} to numeric.")
                version = int(m["version"])
            name, label = m["name"], m["label"]
            if method == "GET":
                doc = self._metadata(name, version, label) if m["metadata"] else self._status(name, version, label)
            elif m["verb"] == "predict":
                doc = self._predict(name, version, label, body)
            elif m["verb"] in ("classify", "regress"):
                return 200, "application/json", self._classify_regress(m["verb"], name, version, label, body)
            else:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
            return 200, "application/json", json.dumps(doc).encode()
        except ServingError as err:
            status = err.code.name
            return _error(err)
        finally:
            if self.metrics and method == "POST":
                self.metrics.observe_request(m["name"], m["verb"] or "", "REST", status,
                                             time.perf_counter() - start)

    def _status(self, name, version, label) -> dict:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        _set_target(req.model_spec, version, label)
        resp = model_status(self.predictor.manager, req)
        return json_format.MessageToDict(resp, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def _metadata(self, name, version, label) -> dict:
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = name
        _set_target(req.model_spec, version, label)
        resp = model_metadata(self.predictor.manager, req)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sig_map)
        return {
            "model_spec": {"name": name, "signature_name": "", "version": str(resp.model_spec.version.value)},
            # TF Serving prints with always_print_primitive_fields: "defaults": {}, "name": "",
            # "unknown_rank": false appear even at their default values
            "metadata": {"signature_def": json_format.MessageToDict(
                sig_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        }

    def _predict(self, name, version, label, body: bytes) -> dict:
        ticket = self._admit(body)
        try:
            return self._predict_admitted(name, version, label, body)
        finally:
            ticket.release()

    def _classify_regress(self, verb: str, name, version, label, body: bytes) -> bytes:
        """`:classify` / `:regress`: JSON examples → Input → the same run as gRPC; the body,
        its parse and the Example protos are charged before parsing, the example tensor
        (context copied into every example) before it is built."""
        ticket = self._admit(body, extra=EXAMPLE_FACTOR * len(body))
        try:
            request: classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest
            request = (classification_pb2.ClassificationRequest() if verb == "classify"
                       else regression_pb2.RegressionRequest())
            request.model_spec.name = name
            _set_target(request.model_spec, version, label)
            fill_request(parse_json(body), request)
            if isinstance(request, classification_pb2.ClassificationRequest):
                response = self.inference.classify(request, ticket.grow, self.timeout)
                return classification_json(response.result)
            regression = self.inference.regress(request, ticket.grow, self.timeout)
            return regression_json(regression.result)
        finally:
            ticket.release()

    def _admit(self, body: bytes, extra: int = 0) -> Ticket:
        """Charge the body and what parsing it may take; refuse what can never fit (413)
        or does not fit now (429), before parsing."""
        cost = len(body) + parse_cost(body) + extra
        if self.budget is None:
            return Ticket(None, cost)
        if cost > self.budget.limit:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, _too_costly(cost, self.budget.limit),
                               http_status=413)
        return self.budget.admit(cost)

    def _predict_admitted(self, name, version, label, body: bytes) -> dict:
        doc = parse_body(body)
        sig, fmt = request_format(doc)
        _, _, outputs = self.predictor.predict(name, version, label, sig,
                                               lambda spec: decode_request(spec, doc, fmt),
                                               timeout=self.timeout)
        return encode_response(outputs, fmt)


# Example protos (and their serialized copies) built from a JSON body, per body byte
EXAMPLE_FACTOR = 4


def _set_target(model_spec, version, label) -> None:
    if version is not None:
        model_spec.version.value = version
    elif label is not None:
        model_spec.version_label = label


def _too_costly(cost: int, limit: int) -> str:
    return (f"Request body would take about {cost} bytes to parse, over the limit of {limit} "
            "bytes; send fewer rows per request, or large tensors over gRPC")


def _error(err: ServingError) -> tuple[int, str, bytes]:
    return err.http_status, "application/json", json.dumps({"error": err.message}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: RestApp  # set on the subclass
    slots: threading.BoundedSemaphore  # set on the subclass

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            bad = json.dumps({"error": "Invalid Content-Length header"}).encode()
            self._send(400, "application/json", bad, close=True)
            return
        limit = self.app.max_body_bytes
        if limit is not None and length > limit:
            self._discard(length)  # read it so the client is not cut off mid-send
            err = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Request body of {length} bytes exceeds the limit of {limit} bytes")
            self._send(413, "application/json", json.dumps({"error": err.message}).encode(), close=True)
            return
        body = self.rfile.read(length) if length else b""
        if method == "OPTIONS" and self.app.cors:  # CORS preflight
            self._send(204, "text/plain", b"")
            return
        try:
            with self.slots:  # at most --rest_api_num_threads requests are handled at once
                status, ctype, payload = self.app.handle(method, self.path, body)
        except Exception as exc:  # never leave a client without an answer
            log.exception("REST handler failed")
            status, ctype, payload = 500, "application/json", json.dumps({"error": str(exc)}).encode()
        self._send(status, ctype, payload)

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
