"""Hypothesis fuzzing: ≥1,000 malformed gRPC requests and a few hundred malformed
REST bodies; each gets the right error class, and the server still answers
correctly afterwards."""

from __future__ import annotations

import http.client

import grpc
import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from .models import INPUT, OUTPUT, SHAPE, reference_predict

INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNTS = {"grpc": 0, "rest": 0}

_dtypes = st.sampled_from([types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_STRING,
                           types_pb2.DT_BOOL, types_pb2.DT_HALF, types_pb2.DT_UINT8, types_pb2.DT_COMPLEX64,
                           types_pb2.DT_INVALID, 999])
_dims = st.lists(st.integers(-3, 12), min_size=0, max_size=6)


def _tensor(dtype, dims, content: bytes, n_vals: int) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims:
        t.tensor_shape.dim.add(size=d)
    if content:
        t.tensor_content = content
    t.float_val.extend([0.5] * n_vals)
    return t


@st.composite
def malformed(draw):
    """(request, allowed status codes) — malformed by construction."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    good = tf.make_tensor_proto(np.zeros((1, *SHAPE), np.float32))
    kind = draw(st.sampled_from(["model", "version", "label", "alias", "dtype", "shape", "content",
                                 "signature", "filter", "empty", "extra"]))
    req.inputs[INPUT].CopyFrom(good)
    allowed = {INVALID}
    if kind == "model":
        req.model_spec.name = draw(st.text(max_size=20).filter(lambda s: s != "demo"))
        allowed = {grpc.StatusCode.NOT_FOUND}
    elif kind == "version":
        req.model_spec.version.value = draw(st.integers(-2**63, 2**63 - 1).filter(lambda v: v != 1))
        allowed = {grpc.StatusCode.NOT_FOUND}
    elif kind == "label":
        req.model_spec.version_label = draw(st.text(min_size=1, max_size=20))
    elif kind == "alias":
        alias = draw(st.text(max_size=20).filter(lambda s: s != INPUT))
        del req.inputs[INPUT]
        req.inputs[alias].CopyFrom(good)
    elif kind == "dtype":
        req.inputs[INPUT].dtype = draw(_dtypes)
    elif kind == "shape":
        dims = draw(_dims.filter(lambda d: not (len(d) == 4 and d[0] >= 0 and d[1:] == [8, 8, 1])))
        req.inputs[INPUT].CopyFrom(_tensor(types_pb2.DT_FLOAT, dims, b"", draw(st.integers(0, 70))))
    elif kind == "content":
        n = draw(st.integers(0, 64 * 4 * 2).filter(lambda n: n % 256 != 0 or n == 0))
        rows = draw(st.integers(1, 2))
        req.inputs[INPUT].CopyFrom(_tensor(types_pb2.DT_FLOAT, [rows, 8, 8, 1], draw(st.binary(min_size=n, max_size=n)), 0))
        if n == 0:
            req.inputs[INPUT].float_val.extend([1.0] * draw(st.integers(2, 63)))
    elif kind == "signature":
        req.model_spec.signature_name = draw(st.text(min_size=1, max_size=20).filter(lambda s: s != "serving_default"))
        allowed = {grpc.StatusCode.FAILED_PRECONDITION}
    elif kind == "filter":
        req.output_filter.append(draw(st.text(max_size=20).filter(lambda s: s != OUTPUT)))
    elif kind == "empty":
        del req.inputs[INPUT]
    elif kind == "extra":
        req.inputs[draw(st.text(min_size=1, max_size=10).filter(lambda s: s != INPUT))].CopyFrom(good)
    return req, allowed


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(case=malformed())
def _fuzz_grpc(server, case):
    req, allowed = case
    try:
        server.predict.Predict(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in allowed, (exc.code(), exc.details(), req)
        assert exc.details()
        COUNTS["grpc"] += 1
        return
    raise AssertionError(f"malformed request accepted: {req}")


_json_junk = st.one_of(
    st.binary(max_size=200),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                 max_leaves=12).map(lambda v: __import__("json").dumps({"instances": v}).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=_json_junk)
def _fuzz_rest(server, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("POST", "/v1/models/demo:predict", body=body)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    assert resp.status in (400, 404), (resp.status, body, payload)
    assert payload.startswith(b'{"error": ')
    COUNTS["rest"] += 1


def test_fuzz_then_still_correct(shared_server, demo_root):
    _fuzz_grpc(shared_server)
    _fuzz_rest(shared_server)
    assert COUNTS["grpc"] >= 1000 and COUNTS["rest"] >= 300
    x = np.random.default_rng(5).random((4, *SHAPE), dtype=np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
    got = tf.make_ndarray(shared_server.predict.Predict(req, timeout=10).outputs[OUTPUT])
    assert np.max(np.abs(got - reference_predict(demo_root / "demo" / "1", x))) <= 1e-6
    assert shared_server.proc.poll() is None
