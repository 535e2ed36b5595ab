"""gRPC API against a real server process, with the official stubs: parity with the
local SavedModel, metadata, status, and TF Serving's error codes and messages."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from .conftest import MAX_MESSAGE
from .models import INPUT, OUTPUT, SHAPE, predict_request, reference_predict


def _request(name="demo", x=None, version=None, label=None, signature="", alias=INPUT):
    return predict_request(name, x, version=version, label=label, signature=signature, alias=alias)


def _x(rows=3, seed=0):
    return np.random.default_rng(seed).random((rows, *SHAPE), dtype=np.float32)


def _fails(server, req, code):
    with pytest.raises(grpc.RpcError) as e:
        server.predict.Predict(req, timeout=10)
    assert e.value.code() == code, e.value.details()
    return e.value.details()


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_predict_matches_local_savedmodel(shared_server, demo_root, rows):
    x = _x(rows, seed=rows)
    resp = shared_server.predict.Predict(_request(x=x), timeout=10)
    got = tf.make_ndarray(resp.outputs[OUTPUT])
    want = reference_predict(demo_root / "demo" / "1", x)
    assert got.shape == (rows, 5)
    assert np.max(np.abs(got - want)) <= 1e-6
    assert resp.model_spec.name == "demo" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"


def test_predict_by_version_signature_and_output_filter(shared_server):
    req = _request(x=_x(2), version=1, signature="serving_default")
    req.output_filter.append(OUTPUT)
    resp = shared_server.predict.Predict(req, timeout=10)
    assert list(resp.outputs) == [OUTPUT]
    req.output_filter[:] = ["logits"]
    assert _fails(shared_server, req, grpc.StatusCode.INVALID_ARGUMENT).startswith(
        "output tensor alias not found in signature: logits")


def test_predict_accepts_float_val_encoding(shared_server):
    x = _x(2)
    req = _request()
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x.ravel().tolist(), dtype=tf.float32, shape=x.shape))
    got = tf.make_ndarray(shared_server.predict.Predict(req, timeout=10).outputs[OUTPUT])
    want = tf.make_ndarray(shared_server.predict.Predict(_request(x=x), timeout=10).outputs[OUTPUT])
    assert np.array_equal(got, want)


def test_metadata_returns_signature(shared_server):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "demo"
    resp = shared_server.predict.GetModelMetadata(req, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert list(sig.inputs) == [INPUT] and list(sig.outputs) == [OUTPUT]
    assert [d.size for d in sig.inputs[INPUT].tensor_shape.dim] == [-1, 8, 8, 1]
    assert resp.model_spec.version.value == 1
    bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["nope"])
    bad.model_spec.name = "demo"
    with pytest.raises(grpc.RpcError) as e:
        shared_server.predict.GetModelMetadata(bad, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_available_and_unknowns(shared_server):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "demo"
    resp = shared_server.models.GetModelStatus(req, timeout=10)
    (row,) = resp.model_version_status
    assert (row.version, row.state, row.status.error_code) == (1, 30, 0)
    req.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        shared_server.models.GetModelStatus(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "Could not find any versions of model nope"
    req.model_spec.name = "demo"
    req.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as e:
        shared_server.models.GetModelStatus(req, timeout=10)
    assert e.value.details() == "Could not find version 9 of model demo"


def test_unknown_model_version_label(shared_server):
    x = _x(1)
    assert _fails(shared_server, _request("nope", x), grpc.StatusCode.NOT_FOUND) == \
        "Servable not found for request: Latest(nope)"
    assert _fails(shared_server, _request(x=x, version=9), grpc.StatusCode.NOT_FOUND) == \
        "Servable not found for request: Specific(demo, 9)"
    assert _fails(shared_server, _request(x=x, label="canary"), grpc.StatusCode.INVALID_ARGUMENT) == \
        "Unrecognized servable version label: canary"
    assert _fails(shared_server, _request(x=x, signature="nope"), grpc.StatusCode.FAILED_PRECONDITION) == \
        'Serving signature key "nope" not found.'


def test_bad_inputs_name_the_input(shared_server):
    msg = _fails(shared_server, _request(x=_x(1), alias="images"), grpc.StatusCode.INVALID_ARGUMENT)
    assert msg == "input tensor alias not found in signature: images. Inputs expected to be in the set {inputs}."
    msg = _fails(shared_server, _request(x=np.zeros((1, *SHAPE), np.int32)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "int32" in msg and "float" in msg  # TensorFlow's own type check
    msg = _fails(shared_server, _request(x=np.zeros((1, 8, 7), np.float32)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "reshape" in msg and "56 values" in msg  # the graph's own shape error
    msg = _fails(shared_server, _request(), grpc.StatusCode.INVALID_ARGUMENT)
    assert "Missing but required: {inputs}" in msg
    assert _fails(shared_server, predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT) == "Missing ModelSpec"


def test_oversized_request_is_resource_exhausted(shared_server):
    rows = MAX_MESSAGE // (64 * 4) + 10
    _fails(shared_server, _request(x=np.zeros((rows, *SHAPE), np.float32)), grpc.StatusCode.RESOURCE_EXHAUSTED)
    shared_server.predict.Predict(_request(x=_x(1)), timeout=10)  # still serving


def test_classify_checks_the_signature_and_message_size(shared_server):
    """Classify is served (tests/modelserver/test_classify_regress.py); on a predict
    signature it fails TF Serving's structure check, and gRPC's receive limit bounds it."""
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "demo"
    req.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as e:
        shared_server.predict.Classify(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(
        'Expected classification signature outputs to contain at least one of "classes" or "scores".')
    feature = req.input.example_list.examples[0].features.feature["pad"]
    feature.bytes_list.value.append(b"p" * (MAX_MESSAGE + 1))
    with pytest.raises(grpc.RpcError) as e:
        shared_server.predict.Classify(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
