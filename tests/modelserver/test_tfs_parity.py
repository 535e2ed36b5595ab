"""Issue 22 item 3: what a client sees is what tensorflow_model_server shows it, as read
from TF Serving's source (each test names the file and function it follows). Driven with
the official tensorflow-serving-api stubs, plain HTTP and TensorFlow's own profiler client."""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import tfs_config

from .conftest import ServerProc
from .half_plus import write_half_plus_two


class _TwoInputs(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.float32, name="b")])
    def serve(self, a, b):
        return {"sum": a + b}


@pytest.fixture(scope="module")
def parity_server(tmp_path_factory):
    """half_plus_two at versions 1 and 2 (label `stable` → 1), a two-input model, metrics."""
    root = tmp_path_factory.mktemp("parity")
    write_half_plus_two(root, "1")
    write_half_plus_two(root, "2")
    two = _TwoInputs()
    tf.saved_model.save(two, str(root / "two" / "1"), signatures={"serving_default": two.serve})
    cfg = root / "models.config"
    tfs_config.write_text(tfs_config.build_model_server_config([
        tfs_config.ModelEntry("hp", str(root / "half_plus_two"), all_versions=True, labels={"stable": 1}),
        tfs_config.ModelEntry("two", str(root / "two")),
    ]), cfg)
    mon = root / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    server = ServerProc([f"--model_config_file={cfg}", f"--monitoring_config_file={mon}"],
                        tmp_path_factory.mktemp("logs") / "parity.log")
    try:
        server.wait_available("hp", 1)
        server.wait_available("hp", 2)
        server.wait_available("two", 1)
        yield server
    finally:
        server.stop()


def _http(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
    conn.request(method, path, body=data)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload.decode()


def _error(server, method, path, body=None):
    status, text = _http(server, method, path, body)
    return status, json.loads(text)["error"]


def _status_request(name, version=None, label=None):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    return req


# ------------------------------------------------------------------ GetModelStatus


def test_status_ignores_the_version_label_and_lists_newest_first(parity_server):
    """get_model_status_impl.cc GetModelStatusWithModelSpec: only `has_version()` narrows
    the answer; otherwise every version from ServableStateMonitor::GetVersionStates,
    whose VersionMap is ordered by std::greater (servable_state_monitor.h) — newest first.
    A label, known or not, is not looked at."""
    stub = parity_server.models
    for label in (None, "stable", "no_such_label"):
        resp = stub.GetModelStatus(_status_request("hp", label=label), timeout=10)
        assert [s.version for s in resp.model_version_status] == [2, 1], label
    (row,) = stub.GetModelStatus(_status_request("hp", version=1), timeout=10).model_version_status
    assert row.version == 1
    with pytest.raises(grpc.RpcError) as e:
        stub.GetModelStatus(_status_request("nope", version=3), timeout=10)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 3 of model nope")


def test_rest_status_by_label_is_every_version_printed_as_protobuf_json(parity_server):
    """http_rest_api_handler.cc ProcessModelStatusRequest fills the label into the ModelSpec
    (FillModelSpecWithNameVersionAndLabel) and calls GetModelStatus, which ignores it; the
    answer is ToJsonString (http_rest_api_util.cc): MessageToJsonString with add_whitespace
    and always_print_primitive_fields — 1-space indent, a newline at the end."""
    row = ' {\n   "version": "{v}",\n   "state": "AVAILABLE",\n   "status": {\n    "error_code": "OK",\n' \
          '    "error_message": ""\n   }\n  }'
    want = ('{\n "model_version_status": [\n ' + row.replace("{v}", "2") + ",\n "
            + row.replace("{v}", "1") + "\n ]\n}\n")
    for path in ("/v1/models/hp", "/v1/models/hp/labels/stable", "/v1/models/hp/labels/unknown"):
        assert _http(parity_server, "GET", path) == (200, want), path


# ------------------------------------------------------------------ empty model name


def test_an_empty_model_name_is_invalid_argument(parity_server):
    """server_core.cc ServableRequestFromModelSpec (reached through GetServableHandle by
    Predict, Classify, Regress and GetModelMetadata): `ModelSpec has no name specified.`
    GetModelStatus never calls it: an empty name has no versions
    (get_model_status_impl.cc: `Could not find any versions of model `)."""
    want = (grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    predict = predict_pb2.PredictRequest()
    predict.model_spec.SetInParent()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.SetInParent()
    classify.input.example_list.examples.add()
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.SetInParent()
    regress.input.example_list.examples.add()
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.SetInParent()
    stub = parity_server.predict
    for call, req in ((stub.Predict, predict), (stub.Classify, classify), (stub.Regress, regress),
                      (stub.GetModelMetadata, metadata)):
        with pytest.raises(grpc.RpcError) as e:
            call(req, timeout=10)
        assert (e.value.code(), e.value.details()) == want, call
    with pytest.raises(grpc.RpcError) as e:
        parity_server.models.GetModelStatus(_status_request(""), timeout=10)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model ")


# ------------------------------------------------------------------ REST routing


def test_rest_paths_match_case_insensitively_and_dispatch_case_sensitively(parity_server):
    """http_rest_api_util.cc kPredictionApiGegex / kModelStatusApiRegex carry `(?i)` and
    are fully matched (ParseModelInfo); ProcessRequest then compares the method and the
    `metadata` subresource exactly, so `:PREDICT` stays `Malformed request` and
    `/METADATA` answers the status. Names and labels are URL-decoded (DecodeArg)."""
    body = {"instances": [[1.0], [2.0]]}
    status, text = _http(parity_server, "POST", "/V1/MODELS/hp/VERSIONS/2:predict", body)
    assert status == 200 and json.loads(text) == {"predictions": [[2.5], [3.0]]}
    assert _http(parity_server, "POST", "/v1/models/%68p/LABELS/st%61ble:predict", body)[0] == 200
    assert _error(parity_server, "POST", "/v1/models/hp:PREDICT", body) == (
        400, "Malformed request: POST /v1/models/hp:PREDICT")
    status, text = _http(parity_server, "GET", "/v1/models/hp/METADATA")
    assert status == 200 and "model_version_status" in json.loads(text)
    assert _http(parity_server, "GET", "/V1/Models/hp/metadata")[0] == 200


@pytest.mark.parametrize("method,path,code,message", [
    ("GET", "/v1/models/hp:predict", 400, "Malformed request: GET /v1/models/hp:predict"),
    ("PUT", "/v1/models/hp", 400, "Malformed request: PUT /v1/models/hp"),
    ("POST", "/v1/models/hp/metadata", 400, "Malformed request: POST /v1/models/hp/metadata"),
    ("GET", "/v1/models/hp/versions/one", 400, "Malformed request: GET /v1/models/hp/versions/one"),
    ("POST", "/v1/models/hp/versions/18446744073709551615:predict", 400,
     "Failed to convert version: 18446744073709551615 to numeric."),
    ("GET", "/v1/models", 400, "Missing model name in request."),
])
def test_rest_unroutable_requests(parity_server, method, path, code, message):
    """http_rest_api_handler.cc ProcessRequest: anything the two patterns do not match keeps
    the initial `Malformed request: <method> <path>` (INVALID_ARGUMENT → 400; its unit test
    UnsupportedApiCalls lists GET …:predict); ParseModelInfo's SimpleAtoi overflow and
    ProcessModelStatusRequest's empty name have their own texts."""
    assert _error(parity_server, method, path, {"instances": [[1.0]]} if method == "POST" else None) == (
        code, message)


# ------------------------------------------------------------------ REST error texts


@pytest.mark.parametrize("path,body,code,message", [
    ("/v1/models/hp:predict", b'{"instances": [1.0 2.0]}', 400,
     "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19"),
    ("/v1/models/hp:predict", b"instances = [1]", 400, "JSON Parse error: Invalid value. at offset: 0"),
    ("/v1/models/hp:predict", b'{"instances": [1], }', 400,
     "JSON Parse error: Missing a name for object member. at offset: 19"),
    ("/v1/models/hp:predict", b'{"a" 1}', 400,
     "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
    ("/v1/models/hp:predict", b'{"instances": "x} ', 400,
     "JSON Parse error: Missing a closing quotation mark in string. at offset: 18"),
    ("/v1/models/hp:predict", b"{} []", 400,
     "JSON Parse error: The document root must not be followed by other values. at offset: 3"),
    ("/v1/models/hp:predict", b"[1, 2]", 400, "JSON Value: [\n    1,\n    2\n] Is not object"),
    ("/v1/models/hp:predict", b'{"signature_name": "nope", "instances": [[1.0]]}', 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/two:predict", b'{"instances": [1.0, 2.0]}', 400,
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ("/v1/models/two:predict", b'{"inputs": {"a": [1.0]}}', 400, "Missing named input: b in 'inputs' object."),
    ("/v1/models/two:predict", b'{"inputs": [1.0]}', 400,
     "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
     "tensorinfo_map"),
    ("/v1/models/two:predict", b'{"instances": [{"a": 1.0, "b": 2.0}, {"a": 1.0}]}', 400,
     "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"a\": 1.0\n} must only have "
     "keys: a,b"),
    ("/v1/models/two:predict", b'{"instances": [{"a": 1.0, "c": 2.0}]}', 400,
     "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
     "have named input: c"),
    ("/v1/models/hp:predict", b'{"instances": [["a"]]}', 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
     "is not of expected type: float"),
    ("/v1/models/hp:predict", b'{"instances": [[1.0], [1.0, 2.0]]}', 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 1 but "
     "got: 2"),
    ("/v1/models/hp:predict", b'{"instances": [[true]]}', 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: true Type: True is "
     "not of expected type: float"),
    ("/v1/models/hp:predict", b'{"inputs": [[16777217]]}', 400,
     "Cannot convert JSON value: 16777217 to float without loss of precision."),
    ("/v1/models/hp:predict", b'{"inputs": [[1.0]], "instances": [[1.0]]}', 400,
     "JSON Value: {\n    \"inputs\": [\n        [\n            1.0\n        ]\n    ],\n    \"instances\": [\n"
     "        [\n            1.0\n        ]\n    ]\n} Not formatted correctly expecting only one of 'inputs' or "
     "'instances' keys to exist "),
    ("/v1/models/nope:predict", b'{"signature_name": "x"}', 404, "Servable not found for request: Latest(nope)"),
])
def test_rest_error_texts(parity_server, path, body, code, message):
    """json_tensor.cc: ParseJson (RapidJSON's GetParseError_En text and byte offset; `Is not
    object` after FormatError's pretty-printed document), FillTensorMapFromInstancesList,
    FillTensorMapFromInputsMap, AddInstanceItem, FillTensorProto, AddValueToTensor and
    IsLosslessDecimal; http_rest_api_handler.cc GetInfoMap for the signature (resolved
    before the inputs are looked at, so an unknown model is 404 first)."""
    assert _error(parity_server, "POST", path, body) == (code, message)


# ------------------------------------------------------------------ REST bodies


def test_rest_bodies_are_rapidjson_pretty_printed(parity_server):
    """json_tensor.cc MakeRowFormatJsonFromTensors / MakeColumnarFormatJsonFromTensors use
    rapidjson::PrettyWriter (4-space indent), switching each row to kFormatSingleLineArray;
    MakeJsonFromStatus writes `{"error": ...}` through the same writer."""
    row = _http(parity_server, "POST", "/v1/models/hp:predict", {"instances": [[1.0], [2.0]]})
    assert row == (200, '{\n    "predictions": [[2.5], [3.0]\n    ]\n}')
    col = _http(parity_server, "POST", "/v1/models/hp:predict", {"inputs": [[1.0], [2.0]]})
    assert col == (200, '{\n    "outputs": [\n        [\n            2.5\n        ],\n        [\n'
                        '            3.0\n        ]\n    ]\n}')
    two = _http(parity_server, "POST", "/v1/models/two:predict", {"inputs": {"a": [1.0], "b": [0.5]}})
    assert two == (200, '{\n    "outputs": [\n        1.5\n    ]\n}')
    assert _http(parity_server, "POST", "/v1/models/nope:predict", {"instances": [1]}) == (
        404, '{\n    "error": "Servable not found for request: Latest(nope)"\n}')


def test_rest_metadata_is_glued_as_to_json_string_glues_it(parity_server):
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): `{\\n"model_spec":` +
    the printed ModelSpec + `,\\n"metadata": {"signature_def": ` + the printed
    SignatureDefMap + `}\\n}\\n`."""
    status, text = _http(parity_server, "GET", "/v1/models/hp/versions/1/metadata")
    assert status == 200
    assert text.startswith('{\n"model_spec":{\n "name": "hp",\n "signature_name": "",\n "version": "1"\n}\n,\n'
                           '"metadata": {"signature_def": {\n "signature_def": {\n')
    assert text.endswith("\n}\n}\n}\n")
    assert json.loads(text)["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"][
        "dtype"] == "DT_FLOAT"


# ------------------------------------------------------------------ Prometheus


def test_prometheus_metrics_are_tf_servings(parity_server):
    """servables/tensorflow/util.cc: request_count{model_name,status}; request_latency
    {model_name,API,entrypoint} and runtime_latency{model_name,API,runtime} on
    Buckets::Exponential(10, 1.8, 33) in microseconds; prediction_service_impl.cc records
    latency only for OK requests (count for all); predict_util.cc records runtime `TF1`.
    prometheus_exporter.cc prints the histogram buckets with absl::StrCat and `+Inf` last.
    No model_version_state metric exists in TF Serving."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "hp"
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, 1), np.float32)))
    parity_server.predict.Predict(req, timeout=10)
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "hp"
    with pytest.raises(grpc.RpcError):
        parity_server.predict.Predict(bad, timeout=10)
    _http(parity_server, "POST", "/v1/models/hp:predict", {"instances": [[1.0]]})
    status, text = _http(parity_server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert ':tensorflow:serving:request_count{model_name="hp",status="OK"} ' in text
    assert ':tensorflow:serving:request_count{model_name="hp",status="INVALID_ARGUMENT"} 1' in text
    assert "model_version_state" not in text
    grpc_buckets = re.findall(r':tensorflow:serving:request_latency_bucket\{model_name="hp",API="Predict",'
                              r'entrypoint="GRPC",le="([^"]+)"\} (\d+)', text)
    limits = [b for b, _ in grpc_buckets]
    assert limits[:6] == ["10", "18", "32.4", "58.32", "104.976", "188.957"] and limits[-1] == "+Inf"
    assert len(limits) == 34 and grpc_buckets[-1][1] == "1"  # the failed Predict has no latency
    assert ':tensorflow:serving:request_latency_count{model_name="hp",API="Predict",entrypoint="GRPC"} 1' in text
    assert re.search(r':tensorflow:serving:request_latency_count\{model_name="hp",API="predict",'
                     r'entrypoint="REST"\} [1-9]', text)  # earlier tests' REST predicts count too
    assert re.search(r':tensorflow:serving:runtime_latency_count\{model_name="hp",API="Predict",runtime="TF1"\} '
                     r'[1-9]', text)
    assert "# TYPE :tensorflow:serving:runtime_latency histogram" in text


# ------------------------------------------------------------------ ProfilerService


def test_profiler_service_traces_into_the_log_directory(parity_server, tmp_path):
    """model_servers/server.cc registers tensorflow.ProfilerService (--enable_profiler,
    default true); tsl ProfilerServiceImpl::Profile profiles for opts.duration_ms and
    CollectDataToRepository saves `<repository_root>/<session_id>/<host>.xplane.pb`.
    tensorflow_model_server_test.py test_profiler_service_with_valid_trace_request drives
    it with profiler_client.trace while requests run, as here."""
    from tensorflow.python.profiler import profiler_client
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            _http(parity_server, "POST", "/v1/models/hp:predict", {"instances": [[1.0]]})

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        profiler_client.trace(f"127.0.0.1:{parity_server.port}", str(tmp_path), 1000, "", 3)
    finally:
        stop.set()
        worker.join(10)
    (path,) = glob.glob(os.path.join(tmp_path, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace.FromString(open(path, "rb").read())
    assert any(line.events for plane in space.planes for line in plane.lines)


def test_a_profile_of_an_idle_server_shows_its_file_system_polls(parity_server, tmp_path):
    """The upstream test sends its one predict (its `{1..3}` loop runs once under dash)
    around the trace window, so the window may hold no request: the server's own work,
    the file-system poll (every --file_system_poll_wait_seconds, 1 s by default), is
    traced, and a 1.5 s window of an idle server is not an empty trace."""
    from tensorflow.python.profiler import profiler_client
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    profiler_client.trace(f"127.0.0.1:{parity_server.port}", str(tmp_path), 1500, "", 1)
    (path,) = glob.glob(os.path.join(tmp_path, "plugins", "profile", "*", "*.xplane.pb"))
    space = xplane_pb2.XSpace.FromString(open(path, "rb").read())
    names = {m.name for plane in space.planes for m in plane.event_metadata.values()}
    assert "FileSystemStoragePathSource::Poll" in names, sorted(names)[:20]
