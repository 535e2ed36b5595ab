"""REST API with plain HTTP: TF Serving's paths, formats and `{"error": ...}` bodies;
Prometheus metrics at the monitoring config's path."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from .models import OUTPUT, SHAPE, reference_predict


def _call(server, method, path, body=None, raw=False):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, (payload.decode() if raw else json.loads(payload))


def _x(rows=2):
    return np.random.default_rng(rows).random((rows, *SHAPE), dtype=np.float32)


def test_status_and_metadata(shared_server):
    for path in ("/v1/models/demo", "/v1/models/demo/versions/1"):
        status, doc = _call(shared_server, "GET", path)
        assert status == 200
        assert doc == {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    status, doc = _call(shared_server, "GET", "/v1/models/demo/metadata")
    assert status == 200 and doc["model_spec"]["version"] == "1"
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(sig["inputs"]) == ["inputs"] and sig["outputs"][OUTPUT]["dtype"] == "DT_FLOAT"


def test_predict_row_and_columnar_match_local(shared_server, demo_root):
    x = _x(3)
    want = reference_predict(demo_root / "demo" / "1", x)
    status, doc = _call(shared_server, "POST", "/v1/models/demo:predict", {"instances": x.tolist()})
    assert status == 200 and np.max(np.abs(np.array(doc["predictions"]) - want)) <= 1e-6
    status, doc = _call(shared_server, "POST", "/v1/models/demo/versions/1:predict",
                        {"signature_name": "serving_default", "inputs": {"inputs": x.tolist()}})
    assert status == 200 and np.max(np.abs(np.array(doc["outputs"]) - want)) <= 1e-6
    status, doc = _call(shared_server, "POST", "/v1/models/demo:predict",
                        {"instances": [{"inputs": row} for row in x.tolist()]})
    assert status == 200 and len(doc["predictions"]) == 3


@pytest.mark.parametrize("path,body,code,needle", [
    ("/v1/models/nope:predict", {"instances": [[0]]}, 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/demo/versions/9:predict", {"instances": [[0]]}, 404, "Specific(demo, 9)"),
    ("/v1/models/demo/labels/canary:predict", {"instances": [[0]]}, 400,
     "Unrecognized servable version label: canary"),
    ("/v1/models/demo:predict", b'{"instances": [1, 2', 400, "JSON Parse error"),
    ("/v1/models/demo:predict", b"", 400, "JSON Parse error"),
    ("/v1/models/demo:predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/demo:predict", {"inputs": {"images": [[0]]}}, 400, "Missing named input: inputs in 'inputs' object."),
    ("/v1/models/demo:predict", {"instances": [["a"]]}, 400, 'JSON Value: "a" Type: String is not of expected type'),
    ("/v1/models/demo:predict", {"instances": [[1.0, 2.0]]}, 400, "Input to reshape is a tensor with 2 values"),
    ("/v1/models/demo:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("/v1/models/demo:frobnicate", {"instances": [[0]]}, 400, "Malformed request"),  # http_rest_api_handler.cc
])
def test_rest_errors(shared_server, path, body, code, needle):
    status, doc = _call(shared_server, "POST", path, body)
    assert status == code, doc
    assert set(doc) == {"error"} and needle in doc["error"]


def test_status_of_unknown_model_is_404(shared_server):
    status, doc = _call(shared_server, "GET", "/v1/models/nope")
    assert status == 404 and doc == {"error": "Could not find any versions of model nope"}


def test_oversized_body_rejected(shared_server):
    from .conftest import MAX_MESSAGE

    status, doc = _call(shared_server, "POST", "/v1/models/demo:predict", b" " * (MAX_MESSAGE + 1))
    assert status == 413 and "exceeds" in doc["error"]


def test_prometheus_metrics(shared_server):
    _call(shared_server, "POST", "/v1/models/demo:predict", {"instances": _x(1).tolist()})
    status, text = _call(shared_server, "GET", "/monitoring/prometheus/metrics", raw=True)
    assert status == 200
    # servables/tensorflow/util.cc: REST predicts have latency (entrypoint REST), no request_count
    assert ':tensorflow:serving:request_latency_count{model_name="demo",API="predict",entrypoint="REST"}' in text
    assert ":tensorflow:serving:request_latency_bucket{" in text
    assert "model_version_state" not in text  # no such metric in TF Serving


def test_two_different_content_length_headers_are_refused(shared_server):
    """RFC 9112 §6.3: a message with differing Content-Length values is unrecoverable; taking
    the first one (as before) lets a front proxy and this server disagree on where a request
    ends. The connection is closed after the 400; the server keeps answering."""
    import socket

    body = json.dumps({"instances": _x(1).tolist()}).encode()
    head = (f"POST /v1/models/demo:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nContent-Length: 2\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", shared_server.rest_port), timeout=10) as sock:
        sock.sendall(head + body)
        reply = sock.makefile("rb").read().decode(errors="replace")  # the server closes after it
    assert reply.startswith("HTTP/1.1 400") and "Invalid Content-Length header" in reply
    assert _call(shared_server, "GET", "/v1/models/demo")[0] == 200


def test_a_shape_numpy_cannot_index_is_invalid_argument():
    """[2^63-1, 0] has no elements but its byte size overflows: INVALID_ARGUMENT, not UNKNOWN."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from serving.modelserver.errors import ServingError
    from serving.modelserver.tensors import proto_to_ndarray

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in (2**63 - 1, 0):
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(ServingError, match="too large to index") as err:
        proto_to_ndarray("x", proto, 1 << 20)
    assert err.value.code.name == "INVALID_ARGUMENT"
