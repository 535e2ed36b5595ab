"""Classify, Regress and MultiInference (gRPC with the official stubs, REST with plain
HTTP) on TF Serving's half_plus_two built as a TF1 and a TF2 SavedModel; TF Serving's
error codes and texts; and the pure conversions (examples, JSON, results) without a server."""

from __future__ import annotations

import http.client
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

from serving.modelserver.errors import ServingError
from serving.modelserver.example_json import (
    fill_request,
    make_example,
    pretty,
    write_decimal,
)
from serving.modelserver.inference import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    check_signature,
    check_tasks,
    classification_result,
    find_signature,
    regression_result,
    serialized_examples,
)
from serving.modelserver.rest_json import classification_body, regression_body

from .half_plus import (
    CLASSES_SIGNATURE,
    write_half_plus_two_examples_tf1,
    write_half_plus_two_examples_tf2,
)

TF1, TF2 = "half_plus_two_tf1", "half_plus_two_tf2"
MAX_REQUEST = 1 << 20


def _example(**features) -> example_pb2.Example:
    ex = example_pb2.Example()
    make_example(features, ex)
    return ex


def _err(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as e:
        fn(*args)
    return e.value


# ================================================================ pure conversions


def test_context_is_merged_into_every_example_and_example_features_win():
    inp = input_pb2.Input()
    inp.example_list_with_context.context.CopyFrom(_example(x=10.0, c=[1, 2]))
    inp.example_list_with_context.examples.add().CopyFrom(_example(x=2.0))
    inp.example_list_with_context.examples.add().CopyFrom(_example(other="s"))
    arr = serialized_examples(inp)
    assert arr.shape == (2,) and arr.dtype == object
    parsed = tf.io.parse_example(arr, {"x": tf.io.FixedLenFeature([1], tf.float32),
                                       "c": tf.io.FixedLenFeature([2], tf.int64)})
    assert parsed["x"].numpy().ravel().tolist() == [2.0, 10.0]
    assert parsed["c"].numpy().tolist() == [[1, 2], [1, 2]]


def test_empty_input_and_merged_size_limit():
    assert _err(serialized_examples, input_pb2.Input()).message == "Input is empty."
    inp = input_pb2.Input()
    inp.example_list_with_context.context.CopyFrom(_example(pad="p" * 1000))
    for _ in range(100):
        inp.example_list_with_context.examples.add()
    err = _err(serialized_examples, inp, 50_000)  # 100 copies of a ~1 KB context
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max_request_bytes" in err.message


def test_json_values_become_features_by_tf_serving_rules():
    ex = _example(f=2.0, i=3, b=True, s="hé", raw={"b64": "AAE"}, fl=[1.5, 2.0], il=[1, -2], e=[])
    feat = ex.features.feature
    assert list(feat["f"].float_list.value) == [2.0]
    assert list(feat["i"].int64_list.value) == [3]  # a JSON integer is int64, not float
    assert list(feat["b"].int64_list.value) == [1]
    assert list(feat["s"].bytes_list.value) == ["hé".encode()]
    assert list(feat["raw"].bytes_list.value) == [b"\x00\x01"]
    assert list(feat["fl"].float_list.value) == [1.5, 2.0]
    assert list(feat["il"].int64_list.value) == [1, -2]
    assert feat["e"].WhichOneof("kind") is None
    assert list(_example(big=2**70).features.feature["big"].float_list.value) == [float(2**70)]


@pytest.mark.parametrize("value, message", [
    ([2.0, 3], "Unexpected element type in feature: x expecting type: float"),
    ([1, "a"], "Unexpected element type in feature: x expecting type: int64"),
    (["a", 1.5], "Unexpected element type in feature: x expecting type: bytes"),
    (None, "Feature: x has element with unexpected JSON type: Null"),
    ([[1]], "Feature: x has element with unexpected JSON type: Array"),
    ({"a": 1}, "Feature: x has element with unexpected JSON type: Object"),
    (2**63, "Feature: x has uint64 element. Only int64 is supported."),
    (1e39, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
    ({"b64": "!!"}, "Unable to base64 decode"),
])
def test_bad_json_feature_values(value, message):
    err = _err(make_example, {"x": value}, example_pb2.Example())
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.message == message


def test_fill_request_errors_echo_the_document_like_rapidjson():
    req = classification_pb2.ClassificationRequest()
    assert _err(fill_request, {"examples": [1]}, req).message == "Example must be JSON object but got JSON Number"
    assert _err(fill_request, [1], req).message == "JSON Value: [\n    1\n] Is not object"
    doc = {"signature_name": 1, "examples": []}
    assert _err(fill_request, doc, req).message == (
        'JSON Value: {\n    "signature_name": 1,\n    "examples": []\n} not formatted correctly. '
        "'signature_name' key must be a string value.")
    assert _err(fill_request, {"x": 0.5}, req).message == (
        'JSON Value: {\n    "x": 0.5\n} When method is classify, key \'examples\' is expected and was not found')
    assert _err(fill_request, {"examples": {}}, req).message == (
        "JSON Value: {\n    \"examples\": {}\n} Expecting 'examples' value to be an list/array")
    assert _err(fill_request, {"examples": []}, req).message == (
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array")


def test_fill_request_with_context_and_signature():
    req = regression_pb2.RegressionRequest()
    fill_request({"signature_name": "s", "context": {"x": 1.0}, "examples": [{"y": 2}, {}]}, req)
    assert req.model_spec.signature_name == "s"
    assert req.input.WhichOneof("kind") == "example_list_with_context"
    assert len(req.input.example_list_with_context.examples) == 2
    plain = regression_pb2.RegressionRequest()
    fill_request({"examples": [{"y": 2}]}, plain)
    assert plain.input.WhichOneof("kind") == "example_list"


def test_numbers_are_written_as_tf_serving_writes_them():
    assert [pretty(v) for v in (2.0, 0.1, 1e21, 1e-7, 123456789012.0, -0.0, 3, True)] == [
        "2.0", "0.1", "1e21", "1e-7", "123456789012.0", "-0.0", "3", "true"]
    assert write_decimal(3.0, True) == "3.0"
    assert write_decimal(float(np.float32(0.1)), True) == "0.1"  # not 0.10000000149011612
    assert write_decimal(float(np.float32(1 / 3)), True) == "0.333333343"
    assert write_decimal(9e6, True) == "9e+06"
    assert write_decimal(float("nan"), True) == "NaN"


def test_results_to_json():
    result = classification_pb2.ClassificationResult()
    row = result.classifications.add()
    row.classes.add(label="", score=3.0)
    assert json.loads(classification_body(result)) == {"results": [[["", 3.0]]]}
    reg = regression_pb2.RegressionResult()
    reg.regressions.add(value=3.0)
    assert regression_body(reg) == b'{\n    "results": [3.0]\n}'  # RapidJSON's PrettyWriter layout
    assert _err(regression_body, regression_pb2.RegressionResult()).message == (
        "Cannot convert empty RegressionResults to JSON")


def test_classification_and_regression_output_checks():
    res = classification_pb2.ClassificationResult()
    classification_result(1, {"classes": np.array([[b"a", b"b"]], dtype=object),
                              "scores": np.array([[0.5, 0.25]], np.float32)}, res)
    assert [(c.label, c.score) for c in res.classifications[0].classes] == [("a", 0.5), ("b", 0.25)]
    cases = [
        ({"scores": np.zeros(2, np.float32)}, "Expected Tensor shape: [batch_size num_classes] but got [2]"),
        ({"scores": np.zeros((1, 1), np.int32)}, "Expected scores Tensor of DT_FLOAT. Got: DT_INT32"),
        ({"classes": np.zeros((1, 1), np.float32)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ({"scores": np.zeros((2, 1), np.float32)}, "Expected scores output batch size of 1. Got: 2"),
        ({"classes": np.array([[b"a"]], dtype=object), "scores": np.zeros((1, 2), np.float32)},
         "Tensors class and score should match in dim_size(1). Got 1 vs. 2"),
    ]
    for outputs, message in cases:
        assert _err(classification_result, 1, outputs, classification_pb2.ClassificationResult()).message == message
    reg = regression_pb2.RegressionResult()
    regression_result(2, {"outputs": np.array([[1.0], [2.0]], np.float32)}, reg)
    assert [r.value for r in reg.regressions] == [1.0, 2.0]
    for outputs, message in [
        ({"outputs": np.zeros((2, 2), np.float32)},
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]"),
        ({"outputs": np.zeros(3, np.float32)}, "Input batch size did not match output batch size: 2 vs. 3"),
        ({"outputs": np.zeros(2, np.float64)}, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
    ]:
        assert _err(regression_result, 2, outputs, regression_pb2.RegressionResult()).message == message


@pytest.fixture(scope="module")
def tf1_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cr_models")
    write_half_plus_two_examples_tf1(root, TF1)
    write_half_plus_two_examples_tf2(root, TF2)
    return root


@pytest.fixture(scope="module")
def signature_defs(tf1_root):
    from serving.modelserver.servable import read_meta_graph

    return {m: read_meta_graph(tf1_root / m / "1").signature_def for m in (TF1, TF2)}


def test_signature_checks(signature_defs):
    sigs = signature_defs[TF1]
    err = _err(find_signature, sigs, "nope", CLASSIFY_METHOD, False)
    assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")
    err = _err(find_signature, sigs, "", CLASSIFY_METHOD, False)
    assert err.message.startswith('No classification inputs found in SignatureDef: inputs {\n  key: "x"\n')
    assert err.message.endswith('method_name: "tensorflow/serving/predict"\n')
    err = _err(find_signature, sigs, "classify_x_to_y", REGRESS_METHOD, True)
    assert err.message == ("Expected regression signature method_name to be tensorflow/serving/regress. "
                           "Was: tensorflow/serving/classify")
    assert check_signature(sigs[CLASSES_SIGNATURE], CLASSIFY_METHOD, True) == ("inputs", ["classes", "scores"])
    err = _err(check_signature, sigs["classify_x_to_y"], REGRESS_METHOD, False)
    assert err.message.startswith("No regression outputs found in SignatureDef: ")
    # TF2 signatures all say `predict`: fine unless the method-name check is on
    tf2 = signature_defs[TF2]
    assert find_signature(tf2, "regress_x_to_y", REGRESS_METHOD, False)[0] == "regress_x_to_y"


def _task(model, signature, method=REGRESS_METHOD) -> inference_pb2.InferenceTask:
    task = inference_pb2.InferenceTask(method_name=method)
    task.model_spec.name = model
    task.model_spec.signature_name = signature
    return task


def test_multi_inference_task_checks(signature_defs):
    sigs = signature_defs[TF1]
    plan = check_tasks([_task(TF1, "regress_x_to_y"), _task(TF1, "classify_x_to_y", CLASSIFY_METHOD)], sigs, False)
    assert plan == [("regress_x_to_y", REGRESS_METHOD, ["outputs"]),
                    ("classify_x_to_y", CLASSIFY_METHOD, ["scores"])]
    cases = [
        ([_task("", "regress_x_to_y")], grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."),
        ([_task(TF1, "regress_x_to_y"), _task(TF2, "regress_x_to_y2")], grpc.StatusCode.INVALID_ARGUMENT,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        ([_task(TF1, "regress_x_to_y"), _task(TF1, "regress_x_to_y")], grpc.StatusCode.INVALID_ARGUMENT,
         "Duplicate evaluation of signature: regress_x_to_y"),
        ([_task(TF1, "nope")], grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: nope"),
        ([_task(TF1, "", "tensorflow/serving/predict")], grpc.StatusCode.UNIMPLEMENTED,
         "Unsupported signature method_name: tensorflow/serving/predict"),
        ([_task(TF1, "regress_x_to_y"), _task(TF1, "regress_x2_to_y3")], grpc.StatusCode.INVALID_ARGUMENT,
         "Input tensor must be the same for all Signatures."),
    ]
    for tasks, code, message in cases:
        err = _err(check_tasks, tasks, sigs, False)
        assert (err.code, err.message) == (code, message)


# ================================================================ against a server


@pytest.fixture(scope="module")
def server(tf1_root, tmp_path_factory):
    from .conftest import ServerProc

    cfg = tmp_path_factory.mktemp("cr_cfg") / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{tf1_root / n}" model_platform: "tensorflow" }}\n'
        for n in (TF1, TF2)) + "}\n")
    mon = cfg.parent / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    proc = ServerProc([f"--model_config_file={cfg}", f"--monitoring_config_file={mon}",
                       f"--max_request_bytes={MAX_REQUEST}", "--tensorflow_intra_op_parallelism=1",
                       "--tensorflow_inter_op_parallelism=1"],
                      tmp_path_factory.mktemp("cr_logs") / "server.log")
    try:
        proc.wait_available(TF1, 1)
        proc.wait_available(TF2, 1)
        yield proc
    finally:
        proc.stop()


def _input(*examples, context=None) -> input_pb2.Input:
    inp = input_pb2.Input()
    if context is None:
        for ex in examples:
            inp.example_list.examples.add().CopyFrom(_example(**ex))
    else:
        inp.example_list_with_context.context.CopyFrom(_example(**context))
        for ex in examples:
            inp.example_list_with_context.examples.add().CopyFrom(_example(**ex))
    return inp


def _classify(model, signature="classify_x_to_y", inp=None, version=None):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    req.input.CopyFrom(inp if inp is not None else _input({"x": 2.0}))
    return req


def _regress(model, signature="regress_x_to_y", inp=None):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    req.input.CopyFrom(inp if inp is not None else _input({"x": 2.0}))
    return req


def _fails(call, req, code) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call(req, timeout=30)
    assert e.value.code() == code, e.value.details()
    return e.value.details()


def _post(server, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body).encode())
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload


@pytest.mark.parametrize("model", [TF1, TF2])
def test_grpc_classify_and_regress(server, model):
    resp = server.predict.Classify(_classify(model, version=1), timeout=30)
    assert len(resp.result.classifications) == 1
    classes = resp.result.classifications[0].classes
    assert len(classes) == 1 and classes[0].label == "" and classes[0].score == pytest.approx(3.0)
    assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == (
        model, 1, "classify_x_to_y")
    resp = server.predict.Regress(_regress(model), timeout=30)
    assert [r.value for r in resp.result.regressions] == [pytest.approx(3.0)]
    assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == (
        model, 1, "regress_x_to_y")
    resp = server.predict.Regress(_regress(model, "regress_x_to_y2", _input({"x": 2.0}, {"x": 4.0})), timeout=30)
    assert [r.value for r in resp.result.regressions] == [pytest.approx(4.0), pytest.approx(5.0)]


def test_grpc_classes_output(server):
    resp = server.predict.Classify(_classify(TF1, CLASSES_SIGNATURE), timeout=30)
    assert [(c.label, c.score) for c in resp.result.classifications[0].classes] == [("lo", 3.0), ("hi", -3.0)]


@pytest.mark.parametrize("model", [TF1, TF2])
def test_grpc_context_features_are_merged(server, model):
    # x only in the context; then x in both (the example's wins)
    resp = server.predict.Regress(_regress(model, inp=_input({}, {"x": 2.0}, context={"x": 6.0})), timeout=30)
    assert [r.value for r in resp.result.regressions] == [5.0, 3.0]


def test_grpc_multi_inference_tf1(server):
    req = inference_pb2.MultiInferenceRequest()
    req.tasks.append(_task(TF1, "regress_x_to_y"))
    req.tasks.append(_task(TF1, "classify_x_to_y", CLASSIFY_METHOD))
    req.tasks[0].model_spec.version.value = 1
    req.input.CopyFrom(_input({"x": 2.0}))
    resp = server.predict.MultiInference(req, timeout=30)
    assert len(resp.results) == 2
    assert resp.results[0].regression_result.regressions[0].value == 3.0
    assert resp.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [(r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name)
            for r in resp.results] == [(TF1, 1, "regress_x_to_y"), (TF1, 1, "classify_x_to_y")]


def test_grpc_multi_inference_tf2(server):
    """tf.saved_model.save gives each signature its own input placeholder; as TF Serving's
    TF2 runner does (and its testMultiInferenceTf2 expects), each task's signature is fed
    the same examples. TF1 models keep the one-shared-tensor rule (see the unit test)."""
    req = inference_pb2.MultiInferenceRequest(tasks=[_task(TF2, "regress_x_to_y", REGRESS_METHOD),
                                                     _task(TF2, "classify_x_to_y", CLASSIFY_METHOD)])
    req.input.CopyFrom(_input({"x": 2.0}))
    resp = server.predict.MultiInference(req, timeout=30)
    assert resp.results[0].regression_result.regressions[0].value == 3.0
    assert resp.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [r.model_spec.signature_name for r in resp.results] == ["regress_x_to_y", "classify_x_to_y"]


def test_grpc_errors(server):
    c, r, mi = server.predict.Classify, server.predict.Regress, server.predict.MultiInference
    inv = grpc.StatusCode.INVALID_ARGUMENT
    assert _fails(c, _classify(TF1, "nope"), inv) == "No signature was found with the name: nope"
    assert _fails(c, _classify(TF1, inp=input_pb2.Input()), inv) == "Input is empty."
    assert _fails(r, _regress(TF1, inp=input_pb2.Input()), inv) == "Input is empty."
    # a predict signature named in Classify: TF Serving checks its structure (no method check by default)
    assert _fails(c, _classify(TF1, "serving_default"), inv).startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"')
    assert _fails(r, _regress(TF1, "classify_x_to_y"), inv).startswith(
        "No regression outputs found in SignatureDef: ")
    assert _fails(c, classification_pb2.ClassificationRequest(input=_input({"x": 2.0})), inv) == "Missing ModelSpec"
    assert "Feature: x (data type: float) is required but could not be found" in _fails(
        c, _classify(TF1, inp=_input({"y": 2.0})), inv)
    assert _fails(c, _classify("nosuchmodel"), grpc.StatusCode.NOT_FOUND)
    two = inference_pb2.MultiInferenceRequest(tasks=[_task(TF1, "regress_x_to_y"), _task(TF2, "regress_x_to_y")],
                                              input=_input({"x": 2.0}))
    assert _fails(mi, two, inv) == "All ModelSpecs in a MultiInferenceRequest must access the same model name."
    dup = inference_pb2.MultiInferenceRequest(tasks=[_task(TF1, "regress_x_to_y")] * 2, input=_input({"x": 2.0}))
    assert _fails(mi, dup, inv) == "Duplicate evaluation of signature: regress_x_to_y"
    pred = inference_pb2.MultiInferenceRequest(tasks=[_task(TF1, "serving_default", "tensorflow/serving/predict")],
                                               input=_input({"x": 2.0}))
    assert _fails(mi, pred, grpc.StatusCode.UNIMPLEMENTED) == "Unsupported signature method_name: tensorflow/serving/predict"


def test_grpc_context_copies_are_bounded(server):
    inp = _input(*([{}] * 2000), context={"pad": "p" * 1000})  # ~10 KB sent, ~2 MB once merged
    msg = _fails(server.predict.Regress, _regress(TF1, inp=inp), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "--max_request_bytes" in msg


@pytest.mark.parametrize("model", [TF1, TF2])
def test_rest_classify_and_regress(server, model):
    status, body = _post(server, f"/v1/models/{model}:classify",
                         {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [[["", 3.0]]]}
    status, body = _post(server, f"/v1/models/{model}/versions/1:regress",
                         {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [3.0]}
    status, body = _post(server, f"/v1/models/{model}:regress", {
        "signature_name": "regress_x_to_y", "context": {"x": 6.0}, "examples": [{}, {"x": 2.0}]})
    assert status == 200 and json.loads(body) == {"results": [5.0, 3.0]}


def test_rest_classes_and_float_text(server):
    status, body = _post(server, f"/v1/models/{TF1}:classify",
                         {"signature_name": CLASSES_SIGNATURE, "examples": [{"x": 0.2}]})
    # json_tensor.cc MakeJsonFromClassificationResult: PrettyWriter, each example on one line
    assert status == 200 and body == b'{\n    "results": [[["lo", 2.1], ["hi", -2.1]]\n    ]\n}'


def test_rest_errors(server):
    def error(path, body, status=400):
        got, payload = _post(server, path, body)
        assert got == status, payload
        return json.loads(payload)["error"]

    cls, reg = f"/v1/models/{TF1}:classify", f"/v1/models/{TF1}:regress"
    assert error(cls, {"signature_name": "classify_x_to_y", "examples": [{"x": [2.0, 3]}]}) == (
        "Unexpected element type in feature: x expecting type: float")
    assert error(cls, {"examples": [1.0]}) == "Example must be JSON object but got JSON Number"
    assert error(reg, {"signature_name": "regress_x_to_y"}) == (
        'JSON Value: {\n    "signature_name": "regress_x_to_y"\n} '
        "When method is classify, key 'examples' is expected and was not found")
    assert error(cls, b"") == "JSON Parse error: The document is empty"
    assert error(cls, b"{nope").startswith("JSON Parse error: ")
    assert error(cls, b"[" * 100_000 + b"]" * 100_000).startswith("JSON Parse error: ")
    assert error(cls, {"signature_name": "nope", "examples": [{"x": 2.0}]}) == (
        "No signature was found with the name: nope")
    assert error(cls, {"examples": [{"x": 2.0}]}).startswith("No classification inputs found in SignatureDef: ")
    assert error("/v1/models/nosuch:classify", {"examples": [{"x": 2.0}]}, 404)
    big = {"signature_name": "regress_x_to_y", "context": {"pad": "p" * 1000}, "examples": [{}] * 2000}
    assert "--max_request_bytes" in error(reg, big, 429)


def test_metrics_and_no_tracebacks(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    # servables/tensorflow/util.cc: request_count{model_name,status} (gRPC Classify/Regress,
    # prediction_service_impl.cc), request_latency{model_name,API,entrypoint} for successes
    assert f':tensorflow:serving:request_count{{model_name="{TF1}",status="OK"}}' in text
    assert f':tensorflow:serving:request_count{{model_name="{TF1}",status="INVALID_ARGUMENT"}}' in text
    for api, entry in (("Classify", "GRPC"), ("Regress", "GRPC"), ("classify", "REST"), ("regress", "REST")):
        assert (f':tensorflow:serving:request_latency_count{{model_name="{TF1}",API="{api}",'
                f'entrypoint="{entry}"}}') in text, (api, entry)
    assert "Traceback" not in server.log()


def test_method_name_check_flag(tf1_root, server_factory):
    """--enable_signature_method_name_check: the signature's method_name must match."""
    srv = server_factory([f"--model_name={TF1}", f"--model_base_path={tf1_root / TF1}",
                          "--enable_signature_method_name_check", "--tensorflow_intra_op_parallelism=1"],
                         rest=False)
    srv.wait_available(TF1, 1)
    inv = grpc.StatusCode.INVALID_ARGUMENT
    assert _fails(srv.predict.Classify, _classify(TF1, "serving_default"), inv) == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict")
    assert _fails(srv.predict.Regress, _regress(TF1, "classify_x_to_y"), inv) == (
        "Expected regression signature method_name to be tensorflow/serving/regress. "
        "Was: tensorflow/serving/classify")
    assert srv.predict.Classify(_classify(TF1), timeout=30).result.classifications[0].classes[0].score == 3.0
