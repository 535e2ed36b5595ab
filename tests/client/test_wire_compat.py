"""The project's messages and TF Serving's official ones must agree on the wire, both ways."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")  # these tests may import TF; the client never does
from tensorflow_serving.apis import predict_pb2  # noqa: E402

from serving.client import codec  # noqa: E402
from serving.client._generated import tfrollout_wire_pb2 as wire  # noqa: E402

rng = np.random.default_rng(0)

CASES = {
    "float16": rng.standard_normal((3, 4)).astype(np.float16),
    "float32": rng.standard_normal((2, 3, 4)).astype(np.float32),
    "float64": rng.standard_normal((5,)).astype(np.float64),
    "int8": rng.integers(-128, 127, (4, 4), dtype=np.int8),
    "int16": rng.integers(-30000, 30000, (7,), dtype=np.int16),
    "int32": rng.integers(-2**31, 2**31 - 1, (3, 2), dtype=np.int32),
    "int64": rng.integers(-2**62, 2**62, (3,), dtype=np.int64),
    "uint8": rng.integers(0, 255, (2, 8, 8, 3), dtype=np.uint8),
    "bool": rng.integers(0, 2, (6,)).astype(bool),
    "string": np.array([[b"a", b"\x00\xffbin"], [b"", "unicod\u00e9".encode()]], dtype=object),
    "scalar_float": np.array(3.5, dtype=np.float32),
    "scalar_int64": np.array(-7, dtype=np.int64),
    "scalar_string": np.array(b"only", dtype=object),
    "empty_float": np.zeros((0, 3), dtype=np.float32),
    "empty_int32": np.zeros((2, 0), dtype=np.int32),
    "big_float32": rng.standard_normal((64, 224, 224, 3)).astype(np.float32),
}


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.dtype == object
        assert actual.tolist() == expected.tolist()
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


def _request_ours(arrays: dict[str, np.ndarray]) -> bytes:
    req = wire.PredictRequest()
    req.model_spec.name = "m"
    req.model_spec.version.value = 3
    req.model_spec.signature_name = "serving_default"
    codec.encode_map(arrays, req.inputs)
    req.output_filter.append("out")
    return req.SerializeToString()


@pytest.mark.parametrize("name", sorted(CASES))
def test_ours_to_official(name: str) -> None:
    data = _request_ours({name: CASES[name]})
    official = predict_pb2.PredictRequest.FromString(data)
    assert official.model_spec.name == "m"
    assert official.model_spec.version.value == 3
    assert official.model_spec.signature_name == "serving_default"
    assert list(official.output_filter) == ["out"]
    _assert_same(tf.make_ndarray(official.inputs[name]), CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_official_to_ours(name: str) -> None:
    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = "m"
    resp.model_spec.version_label = "stable"
    resp.outputs[name].CopyFrom(tf.make_tensor_proto(CASES[name]))
    ours = wire.PredictResponse.FromString(resp.SerializeToString())
    assert ours.model_spec.WhichOneof("version_choice") == "version_label"
    assert ours.model_spec.version_label == "stable"
    _assert_same(codec.decode(ours.outputs[name]), CASES[name])


# TF Serving fills the typed *_val lists (not tensor_content) for many outputs.
TYPED = {
    "float_val": (np.float32, [1.5, -2.0, 3.25, 0.0]),
    "double_val": (np.float64, [1e300, -2.5, 0.1, 7.0]),
    "int_val": (np.int32, [1, -2, 3, 2**31 - 1]),
    "int_val_int8": (np.int8, [1, -2, 127, -128]),
    "int_val_uint8": (np.uint8, [0, 1, 200, 255]),
    "int_val_int16": (np.int16, [0, -1, 32767, -32768]),
    "int64_val": (np.int64, [2**40, -1, 0, 5]),
    "bool_val": (np.bool_, [True, False, True, True]),
    "half_val": (np.float16, [1.0, -0.5, 65504.0, 0.0]),
}


def _typed_official(dtype: type, values: list) -> object:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(dtype).as_datatype_enum)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    arr = np.array(values, dtype=dtype)
    if dtype == np.float16:
        proto.half_val.extend(arr.view(np.uint16).astype(np.int32).tolist())
    elif dtype == np.float32:
        proto.float_val.extend(values)
    elif dtype == np.float64:
        proto.double_val.extend(values)
    elif dtype == np.int64:
        proto.int64_val.extend(values)
    elif dtype == np.bool_:
        proto.bool_val.extend(values)
    else:
        proto.int_val.extend(values)
    assert proto.dtype != types_pb2.DT_INVALID
    return proto


@pytest.mark.parametrize("field", sorted(TYPED))
def test_typed_value_lists_decode_like_tensorflow(field: str) -> None:
    dtype, values = TYPED[field]
    proto = _typed_official(dtype, values)
    ours = wire.Tensor.FromString(proto.SerializeToString())
    _assert_same(codec.decode(ours), tf.make_ndarray(proto))


def test_repeated_last_value_compression_matches_tensorflow() -> None:
    from tensorflow.core.framework import tensor_pb2, types_pb2
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in (3, 4):
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.extend([1.0, 2.0])  # TF expands to 1, 2, 2, 2, ...
    ours = wire.Tensor.FromString(proto.SerializeToString())
    _assert_same(codec.decode(ours), tf.make_ndarray(proto))


def test_bfloat16_both_ways() -> None:
    import ml_dtypes
    arr = np.array([[1.0, -2.5], [0.125, 3e38]], dtype=ml_dtypes.bfloat16)
    official = tf.make_tensor_proto(arr)
    ours = wire.Tensor.FromString(official.SerializeToString())
    _assert_same(codec.decode(ours), arr)
    back = type(official).FromString(codec.encode(arr).SerializeToString())
    _assert_same(tf.make_ndarray(back), arr)
    # and the half_val form a server may send
    typed = type(official)(dtype=official.dtype)
    typed.tensor_shape.CopyFrom(official.tensor_shape)
    typed.half_val.extend(arr.view(np.uint16).astype(np.int32).ravel().tolist())
    _assert_same(codec.decode(wire.Tensor.FromString(typed.SerializeToString())), arr)


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_copy_response_scanner_matches_official(name: str) -> None:
    from serving.client.fastwire import FastPredictResponse

    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = "m"
    resp.model_spec.version.value = 7
    resp.outputs[name].CopyFrom(tf.make_tensor_proto(CASES[name]))
    resp.outputs["typed"].CopyFrom(_typed_official(np.float32, [1.5, -2.0, 3.25, 0.0]))
    fast = FastPredictResponse.FromString(resp.SerializeToString())
    assert fast.model_spec.name == "m" and fast.model_spec.version.value == 7
    _assert_same(fast.outputs[name], CASES[name])
    _assert_same(fast.outputs["typed"], tf.make_ndarray(resp.outputs["typed"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scanner_views_packed_typed_fields(dtype) -> None:
    """TF Serving's default answer (float_val / double_val, packed) is viewed, not copied,
    and decodes exactly as TensorFlow reads it; TF's last-value repetition still works."""
    from serving.client.fastwire import FastPredictResponse

    values = np.random.default_rng(3).standard_normal((64, 10)).astype(dtype)
    resp = predict_pb2.PredictResponse()
    resp.outputs["p"].CopyFrom(_typed_official(dtype, values.ravel().tolist()))
    resp.outputs["p"].tensor_shape.ClearField("dim")
    for d in values.shape:
        resp.outputs["p"].tensor_shape.dim.add(size=d)
    short = resp.outputs["short"]
    short.CopyFrom(_typed_official(dtype, [1.5, 2.5]))
    short.tensor_shape.ClearField("dim")
    short.tensor_shape.dim.add(size=5)  # 2 values for 5 elements: the last one repeats
    data = resp.SerializeToString()
    fast = FastPredictResponse.FromString(data)
    _assert_same(fast.outputs["p"], tf.make_ndarray(resp.outputs["p"]))
    assert np.shares_memory(fast.outputs["p"], np.frombuffer(data, np.uint8))  # a view of the reply
    _assert_same(fast.outputs["short"], tf.make_ndarray(short))
    assert fast.outputs["short"].tolist() == [1.5, 2.5, 2.5, 2.5, 2.5]
