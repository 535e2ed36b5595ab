"""Hypothesis fuzzing: ≥1,000 malformed gRPC requests and a few hundred malformed
REST bodies; each gets the right error class, and the server still answers
correctly afterwards. A second round mixes valid and invalid requests with random
dtypes, shapes, declared sizes and encodings (tensor_content, typed values, raw
wire bytes): none may end in INTERNAL / UNKNOWN / HTTP 500 or leave a traceback in
the server log, and every valid one gets the model's own answer."""

from __future__ import annotations

import http.client
import json
import math
import time

import grpc
import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from .models import INPUT, OUTPUT, SHAPE, reference_predict

INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNTS = {"grpc": 0, "rest": 0, "random": 0, "wire": 0, "valid_grpc": 0, "valid_rest": 0}
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
PREDICT = "/tensorflow.serving.PredictionService/Predict"

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
        # an empty name is TF Serving's INVALID_ARGUMENT "ModelSpec has no name specified."
        allowed = {grpc.StatusCode.NOT_FOUND} if req.model_spec.name else {INVALID}
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
        # the graph reshapes to [-1, 64]: any element count that is a multiple of 64
        # (0 included) is a valid request for it, as it is for TF Serving
        dims = draw(_dims.filter(lambda d: any(x < 0 for x in d) or math.prod(d) % 64 != 0))
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
                 max_leaves=12).map(lambda v: json.dumps({"instances": v}).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=_json_junk)
def _fuzz_rest(server, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("POST", "/v1/models/demo:predict", body=body)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    if resp.status == 200:  # zero rows (e.g. [[]]): the graph's reshape to [-1, 64] accepts it
        assert json.loads(payload) == {"predictions": []}, (body, payload)
    else:
        assert resp.status in (400, 404), (resp.status, body, payload)
        assert set(json.loads(payload)) == {"error"}, payload  # TF Serving's error body
    COUNTS["rest"] += 1


_any_dtype = st.sampled_from(sorted(types_pb2.DataType.values()) + [999])
_huge_dims = st.lists(st.one_of(st.integers(-2, 12), st.integers(0, 2**62)), min_size=0, max_size=5)


@st.composite
def random_tensor(draw):
    """Any dtype, any declared shape (up to 2^62 per dim), content or values of any length."""
    t = tensor_pb2.TensorProto(dtype=draw(_any_dtype))
    for d in draw(_huge_dims):
        t.tensor_shape.dim.add(size=d)
    how = draw(st.sampled_from(["content", "float", "int", "int64", "bool", "half", "string", "none"]))
    if how == "content":
        t.tensor_content = draw(st.binary(max_size=600))
    elif how == "float":
        t.float_val.extend(draw(st.lists(st.floats(width=32), max_size=70)))
    elif how == "int":
        t.int_val.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=70)))
    elif how == "int64":
        t.int64_val.extend(draw(st.lists(st.integers(-2**63, 2**63 - 1), max_size=70)))
    elif how == "bool":
        t.bool_val.extend(draw(st.lists(st.booleans(), max_size=70)))
    elif how == "half":
        t.half_val.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=70)))
    elif how == "string":
        t.string_val.extend(draw(st.lists(st.binary(max_size=20), max_size=10)))
    return t


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(tensor=random_tensor(), alias=st.sampled_from([INPUT, INPUT, "other"]))
def _fuzz_random_tensors(server, tensor, alias):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    req.inputs[alias].CopyFrom(tensor)
    try:
        server.predict.Predict(req, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER, (exc.code(), exc.details(), req)
        assert exc.details()
    COUNTS["random"] += 1


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.one_of(st.binary(max_size=300),
                     random_tensor().map(lambda t: _truncated(t)),
                     st.binary(max_size=40).map(lambda b: b"\x0a\x06\x0a\x04demo\x12" + b)))
def _fuzz_wire_bytes(server, raw):
    call = server.channel.unary_unary(PREDICT, request_serializer=lambda b: b,
                                      response_deserializer=predict_pb2.PredictResponse.FromString)
    try:
        call(raw, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in NEVER, (exc.code(), exc.details(), raw)
    COUNTS["wire"] += 1


def _truncated(t: tensor_pb2.TensorProto) -> bytes:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    req.inputs[INPUT].CopyFrom(t)
    raw = req.SerializeToString()
    return raw[: max(0, len(raw) - 1 - len(raw) % 7)]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(rows=st.integers(0, 5), seed=st.integers(0, 2**32 - 1), typed=st.booleans())
def _fuzz_valid(server, version_dir, rows, seed, typed):
    x = np.random.default_rng(seed).normal(size=(rows, *SHAPE)).astype(np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    if typed:  # float_val instead of tensor_content
        t = req.inputs[INPUT]
        t.dtype = types_pb2.DT_FLOAT
        for d in x.shape:
            t.tensor_shape.dim.add(size=d)
        t.float_val.extend(x.reshape(-1).tolist())
    else:
        req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
    got = tf.make_ndarray(server.predict.Predict(req, timeout=10).outputs[OUTPUT])
    np.testing.assert_allclose(got, _reference(version_dir, x), atol=1e-5)
    COUNTS["valid_grpc"] += 1
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("POST", "/v1/models/demo:predict", body=json.dumps({"instances": x.tolist()}))
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    if rows == 0:
        assert resp.status == 400 and "error" in payload
    else:
        assert resp.status == 200, payload
        np.testing.assert_allclose(np.array(payload["predictions"]), _reference(version_dir, x), atol=1e-5)
    COUNTS["valid_rest"] += 1


_REFERENCE: dict = {}


def _reference(version_dir, x):
    if "fn" not in _REFERENCE:
        _REFERENCE["fn"] = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return _REFERENCE["fn"](inputs=tf.constant(x))[OUTPUT].numpy()


def test_fuzz_then_still_correct(shared_server, demo_root):
    _fuzz_grpc(shared_server)
    _fuzz_rest(shared_server)
    _fuzz_random_tensors(shared_server)
    _fuzz_wire_bytes(shared_server)
    _fuzz_valid(shared_server, demo_root / "demo" / "1")
    assert COUNTS["grpc"] >= 1000 and COUNTS["rest"] >= 300
    assert COUNTS["random"] >= 500 and COUNTS["wire"] >= 300
    assert COUNTS["valid_grpc"] >= 100 and COUNTS["valid_rest"] >= 100
    assert sum(COUNTS.values()) >= 2300
    log = shared_server.log()
    assert "Traceback" not in log and "Exception deserializing" not in log, log[-3000:]
    x = np.random.default_rng(5).random((4, *SHAPE), dtype=np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
    got = tf.make_ndarray(shared_server.predict.Predict(req, timeout=10).outputs[OUTPUT])
    assert np.max(np.abs(got - reference_predict(demo_root / "demo" / "1", x))) <= 1e-6
    assert shared_server.proc.poll() is None


# ------------------------------------------------ issue 22: no input aborts the process
# Random ranks, shapes and dtypes against a conv model (the demo digits CNN as the
# pipeline exports it), a dense model and a TF1 conv graph, all served by one process.
# With oneDNN on, a wrong-rank input to a Conv2D aborted it (a failed CHECK); every
# answer here must be a status TF Serving gives, and the process must survive all.

# what TF Serving answers: its own checks, or a kernel's status passed through (e.g. the
# fused conv's UNIMPLEMENTED for 0 input channels); REST maps them to 400/404/429/501
TFS_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OUT_OF_RANGE}
TFS_HTTP = {400, 404, 429, 501}
# model → (input alias, dims after the batch dimension)
SHAPED_MODELS = {"cnn": ("inputs", (8, 8, 1)), "dense": ("features", (16,)), "tf1conv": ("x", (8, 8, 1))}
_NP_DTYPES = [np.float32, np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.int8,
              np.bool_, np.object_]
SHAPED = {"grpc": 0, "rest": 0, "ok": 0, "error": 0}
SHAPED_MODEL_OUTCOMES: dict[tuple[str, str], int] = {}


@st.composite
def shaped_case(draw):
    """(model, alias, array): a random rank (0-5) and shape, sometimes the model's own
    inner dims (so some requests are valid), with a random dtype."""
    model = draw(st.sampled_from(sorted(SHAPED_MODELS)))
    alias, inner = SHAPED_MODELS[model]
    how = draw(st.sampled_from(["random", "random", "inner", "perturbed"]))
    if how == "random":
        dims = draw(st.lists(st.integers(0, 9), min_size=0, max_size=5))
    elif how == "inner":
        dims = [draw(st.integers(0, 4)), *inner]
    else:  # one inner dimension off by a little, or one dimension too many / too few
        dims = [draw(st.integers(1, 3)), *inner]
        i = draw(st.integers(0, len(dims) - 1))
        change = draw(st.sampled_from(["grow", "shrink", "drop", "add"]))
        if change == "drop":
            dims.pop(i)
        elif change == "add":
            dims.insert(i, draw(st.integers(1, 3)))
        else:
            dims[i] = max(0, dims[i] + (1 if change == "grow" else -1))
    while math.prod(dims) > 2048:
        dims[dims.index(max(dims))] //= 2
    dtype = draw(st.sampled_from(_NP_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype is np.object_:
        arr = np.array([b"x" * int(n) for n in rng.integers(0, 4, math.prod(dims))], dtype=object).reshape(dims)
    elif dtype is np.bool_:
        arr = rng.random(dims) < 0.5
    else:
        values = np.asarray(rng.random(dims) * 4 - 2)
        arr = (np.abs(values) if np.dtype(dtype).kind == "u" else values).astype(dtype)
    return model, alias, arr


def _rest_body(alias: str, arr: np.ndarray, row_format: bool) -> bytes:
    if arr.dtype == object:
        values = np.array([b.decode() for b in arr.reshape(-1)], dtype=object).reshape(arr.shape).tolist()
    else:
        values = arr.tolist()
    if row_format and arr.ndim >= 1:
        return json.dumps({"instances": values}).encode()
    return json.dumps({"inputs": {alias: values}}).encode()


def _shaped_outcome(model: str, what: str) -> None:
    SHAPED_MODEL_OUTCOMES[(model, what)] = SHAPED_MODEL_OUTCOMES.get((model, what), 0) + 1
    SHAPED["ok" if what == "ok" else "error"] += 1


@settings(max_examples=112, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(cases=st.lists(shaped_case(), min_size=9, max_size=9), row_format=st.booleans())
def _fuzz_shapes(server, cases, row_format):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    for model, alias, arr in cases:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.inputs[alias].CopyFrom(tf.make_tensor_proto(arr))
        try:
            resp = server.predict.Predict(req, timeout=30)
            assert resp.outputs, (model, arr.dtype, arr.shape)
            _shaped_outcome(model, "ok")
        except grpc.RpcError as exc:
            assert server.proc.poll() is None, f"server died on {model} {arr.dtype} {arr.shape}:\n{server.log()[-3000:]}"
            assert exc.code() in TFS_CODES, (model, arr.dtype, arr.shape, exc.code(), exc.details())
            assert exc.details()
            _shaped_outcome(model, exc.code().name)
        SHAPED["grpc"] += 1
        try:  # one keep-alive connection per batch of cases
            conn.request("POST", f"/v1/models/{model}:predict", body=_rest_body(alias, arr, row_format))
            resp = conn.getresponse()
            payload = resp.read()
        except (ConnectionError, http.client.HTTPException) as exc:
            conn.close()
            raise AssertionError(f"REST {model} {arr.dtype} {arr.shape}: {exc!r}\n{server.log()[-3000:]}") from None
        if resp.status == 200:
            assert set(json.loads(payload)) & {"predictions", "outputs"}, payload[:200]
            _shaped_outcome(model, "ok")
        else:
            assert resp.status in TFS_HTTP, (model, arr.dtype, arr.shape, resp.status, payload[:300])
            assert set(json.loads(payload)) == {"error"}, payload[:300]
            _shaped_outcome(model, f"http{resp.status}")
        SHAPED["rest"] += 1
    conn.close()


def test_random_ranks_shapes_and_dtypes_never_abort(tmp_path, server_factory):
    from .zoo import write_cnn, write_dense, write_tf1_conv

    for write in (write_cnn, write_dense, write_tf1_conv):
        write(tmp_path)
    cfg = tmp_path / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{tmp_path / m}" model_platform: "tensorflow" }}\n'
        for m in sorted(SHAPED_MODELS)) + "}\n")
    server = server_factory([f"--model_config_file={cfg}"])
    for model in SHAPED_MODELS:
        server.wait_available(model, 1)
    started = time.perf_counter()
    _fuzz_shapes(server)
    seconds = time.perf_counter() - started
    assert SHAPED["grpc"] >= 1000 and SHAPED["rest"] >= 1000 and SHAPED["grpc"] + SHAPED["rest"] >= 2000
    for model in SHAPED_MODELS:  # every model saw valid requests and refused ones
        assert SHAPED_MODEL_OUTCOMES.get((model, "ok"), 0) >= 20, SHAPED_MODEL_OUTCOMES
        assert SHAPED_MODEL_OUTCOMES.get((model, "INVALID_ARGUMENT"), 0) >= 20, SHAPED_MODEL_OUTCOMES
        assert SHAPED_MODEL_OUTCOMES.get((model, "http400"), 0) >= 20, SHAPED_MODEL_OUTCOMES
    assert server.proc.poll() is None
    log = server.log()
    assert "Check failed" not in log and "Traceback" not in log, log[-3000:]
    # the wrong-rank request of the issue, then a valid one: answered, correct
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", "/v1/models/cnn:predict", body=b'{"instances": [1.0, 2.0, 3.0]}')
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    assert resp.status == 400 and "convolution input must be 4-dimensional: [3]" in payload["error"], payload
    x = np.random.default_rng(3).random((2, 8, 8, 1), dtype=np.float32)
    got = tf.make_ndarray(server.predict.Predict(_shaped_request("cnn", "inputs", x), timeout=30)
                          .outputs["probabilities"])
    want = tf.saved_model.load(str(tmp_path / "cnn" / "1")).signatures["serving_default"](
        inputs=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)
    print(f"shaped fuzz: {SHAPED} in {seconds:.1f} s; {SHAPED_MODEL_OUTCOMES}")


def _shaped_request(model: str, alias: str, arr: np.ndarray) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs[alias].CopyFrom(tf.make_tensor_proto(arr))
    return req
