"""--prefer_tflite_model: a version dir holding model.tflite is served through
tf.lite.Interpreter with TF Serving's signature mapping (metadata SignatureDefs, else a
serving_default named after the tensors), pools bounding concurrency, rows split over a
pool's interpreters; without model.tflite the SavedModel is served."""

from __future__ import annotations

import json
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving.modelserver.tflite import build_signature_defs, split_rows


def _half_plus_two(version_dir: Path) -> bytes:
    """TF Serving's half_plus_two as a TF1 graph: SavedModel (x → y) and model.tflite
    converted from the same session (tensors named x and y, no SignatureDefs)."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.identity(x * 0.5 + 2.0, name="y")
        tf.compat.v1.saved_model.simple_save(sess, str(version_dir), {"x": x}, {"y": y})
        tflite = tf.compat.v1.lite.TFLiteConverter.from_session(sess, [x], [y]).convert()
    (version_dir / "model.tflite").write_bytes(tflite)
    return tflite


def _with_signature_defs(model: bytes, defs: dict[str, meta_graph_pb2.SignatureDef]) -> bytes:
    """The model plus the `signature_defs_metadata` entry TF Serving reads (flexbuffer map key →
    serialized SignatureDef, as tflite's signature_def_util writes it)."""
    fbb = flexbuffers.Builder()
    with fbb.Map():
        for key, sig in defs.items():
            fbb.Key(key)
            fbb._WriteBlob(sig.SerializeToString(), append_zero=True, type_=flexbuffers.Type.STRING)
    payload = fbb.Finish()
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    buf = flatbuffer_utils.schema_fb.BufferT()
    buf.data = np.frombuffer(bytes(payload), np.uint8)
    m.buffers.append(buf)
    md = flatbuffer_utils.schema_fb.MetadataT()
    md.name, md.buffer = "signature_defs_metadata", len(m.buffers) - 1  # tflite kSignatureDefsMetadataName
    m.metadata = (m.metadata or []) + [md]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def _interpreter_output(model: bytes, x: np.ndarray) -> np.ndarray:
    """What the TFLite model itself computes for x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=model)
    it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tflite")
    (root / "half" / "1").mkdir(parents=True)
    plain = _half_plus_two(root / "half" / "1")
    (root / "signed" / "1").mkdir(parents=True)
    base = _half_plus_two(root / "signed" / "1")
    sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    sig.inputs["in"].name, sig.inputs["in"].dtype = "x:0", types_pb2.DT_FLOAT  # legacy name
    sig.outputs["out"].name, sig.outputs["out"].dtype = "y", types_pb2.DT_FLOAT
    signed = _with_signature_defs(base, {"serving_default": sig, "halve_add": sig})
    (root / "signed" / "1" / "model.tflite").write_bytes(signed)
    (root / "savedonly" / "1").mkdir(parents=True)
    _half_plus_two(root / "savedonly" / "1")
    (root / "savedonly" / "1" / "model.tflite").unlink()
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / n}" model_platform: "tensorflow" }}\n'
        for n in ("half", "signed", "savedonly")) + "}\n")
    return {"root": root, "plain": plain, "signed": signed, "config": config}


@pytest.fixture(scope="module")
def tflite_server(models, tmp_path_factory):
    from .conftest import ServerProc

    server = ServerProc([f"--model_config_file={models['config']}", "--prefer_tflite_model",
                         "--num_tflite_pools=2", "--num_tflite_interpreters_per_pool=2"],
                        tmp_path_factory.mktemp("logs") / "tflite.log")
    try:
        for name in ("half", "signed", "savedonly"):
            server.wait_available(name, 1)
        yield server
    finally:
        server.stop()


def _predict(server, name: str, alias: str, x: np.ndarray, signature: str = "") -> dict:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    req.inputs[alias].CopyFrom(tf.make_tensor_proto(x))
    resp = server.predict.Predict(req, timeout=30)
    return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}


def _signatures(server, name: str) -> dict:
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = name
    resp = server.predict.GetModelMetadata(req, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sig_map)
    return dict(sig_map.signature_def)


def test_predict_equals_interpreter_and_saved_model(models, tflite_server):
    x = np.array([[2.0]], np.float32)
    out = _predict(tflite_server, "half", "x", x)["y"]
    assert out.tolist() == [[3.0]]
    np.testing.assert_array_equal(out, _interpreter_output(models["plain"], x))
    saved = tf.saved_model.load(str(models["root"] / "half" / "1")).signatures["serving_default"]
    np.testing.assert_array_equal(out, saved(x=tf.constant(x))["y"].numpy())
    assert "serving half version 1 from model.tflite" in tflite_server.log().lower()


def test_rows_split_over_a_pools_interpreters(models, tflite_server):
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    out = _predict(tflite_server, "half", "x", x)["y"]
    np.testing.assert_array_equal(out, _interpreter_output(models["plain"], x))
    assert out[:, 0].tolist() == [v * 0.5 + 2 for v in range(7)]


def test_metadata_is_the_generated_serving_default(tflite_server):
    sigs = _signatures(tflite_server, "half")
    assert list(sigs) == ["serving_default"]
    sig = sigs["serving_default"]
    assert sig.method_name == "tensorflow/serving/predict"
    assert list(sig.inputs) == ["x"] and list(sig.outputs) == ["y"]
    assert sig.inputs["x"].name == "x" and sig.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [1, 1]  # the interpreter's dims


def test_metadata_signature_defs_are_served(models, tflite_server):
    sigs = _signatures(tflite_server, "signed")
    assert sorted(sigs) == ["halve_add", "serving_default"]
    assert sigs["halve_add"].inputs["in"].name == "x"  # `x:0` resolved to the TFLite tensor
    x = np.array([[2.0], [4.0]], np.float32)
    out = _predict(tflite_server, "signed", "in", x, signature="halve_add")["out"]
    np.testing.assert_array_equal(out, _interpreter_output(models["signed"], x))
    assert out[:, 0].tolist() == [3.0, 4.0]


def test_rest_predict_and_fallback_to_saved_model(tflite_server):
    body = json.dumps({"instances": [[2.0], [6.0]]}).encode()
    req = urllib.request.Request(f"{tflite_server.rest}/v1/models/half:predict", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read()) == {"predictions": [[3.0], [5.0]]}
    # no model.tflite in the version dir: the SavedModel serves (TF Serving's fallback)
    assert _predict(tflite_server, "savedonly", "x", np.array([[2.0]], np.float32))["y"].tolist() == [[3.0]]
    assert "savedonly version 1 from model.tflite" not in tflite_server.log()


def test_wrong_dtype_and_unknown_alias_are_invalid_argument(tflite_server):
    import grpc

    with pytest.raises(grpc.RpcError) as e:
        _predict(tflite_server, "half", "x", np.array([[2.0]], np.float64))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        _predict(tflite_server, "half", "nope", np.array([[2.0]], np.float32))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pure_helpers(models):
    assert split_rows({"a": np.zeros((5, 1))}, 2) is not None
    assert [p["a"].shape[0] for p in split_rows({"a": np.zeros((5, 1))}, 3)] == [2, 2, 1]
    assert split_rows({"a": np.zeros((1, 1))}, 2) is None
    assert split_rows({"a": np.zeros((2,)), "b": np.zeros((3,))}, 2) is None
    details_in = [{"name": "serving_default_x:0", "index": 0, "shape": np.array([1, 1]), "dtype": np.float32}]
    details_out = [{"name": "PartitionedCall:0", "index": 3, "shape": np.array([1, 1]), "dtype": np.float32}]
    defs = build_signature_defs(models["plain"], details_in, details_out)
    assert list(defs["serving_default"].inputs) == ["serving_default_x"]
    assert list(defs["serving_default"].outputs) == ["PartitionedCall"]
