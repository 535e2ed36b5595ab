"""The zero-copy Predict reader (serving.modelserver.wire) against protobuf itself:
whatever protobuf + TensorFlow decode from a request, the reader must decode to the
same array (or refuse it with INVALID_ARGUMENT / RESOURCE_EXHAUSTED, never crash);
declared sizes are refused before allocation; the in-flight budget is exact."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.modelserver import wire
from serving.modelserver.errors import ServingError
from serving.modelserver.limits import ByteBudget
from serving.modelserver.tensors import SignatureSpec, TensorSpec

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _spec(dtype: int) -> SignatureSpec:
    return SignatureSpec("serving_default", {"x": TensorSpec("x", "x:0", dtype, None)}, {})


def _request(tensor: tensor_pb2.TensorProto) -> bytes:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    req.inputs["x"].CopyFrom(tensor)
    req.output_filter.append("y")
    return req.SerializeToString()


def _decode(raw: bytes, limit: int | None = 1 << 30, dtype: int | None = None):
    wp = wire.read_predict(raw, limit, None)
    spec_dtype = dtype if dtype is not None else wp.message().inputs["x"].dtype
    return wp, wp.decode(_spec(spec_dtype))["x"]


_typed = st.sampled_from([
    (types_pb2.DT_FLOAT, "float_val", st.floats(width=32, allow_nan=False)),
    (types_pb2.DT_DOUBLE, "double_val", st.floats(allow_nan=False)),
    (types_pb2.DT_INT32, "int_val", st.integers(-2**31, 2**31 - 1)),
    (types_pb2.DT_INT8, "int_val", st.integers(-2**31, 2**31 - 1)),
    (types_pb2.DT_UINT16, "int_val", st.integers(-2**31, 2**31 - 1)),
    (types_pb2.DT_INT64, "int64_val", st.integers(-2**63, 2**63 - 1)),
    (types_pb2.DT_UINT32, "uint32_val", st.integers(0, 2**32 - 1)),
    (types_pb2.DT_UINT64, "uint64_val", st.integers(0, 2**64 - 1)),
    (types_pb2.DT_BOOL, "bool_val", st.booleans()),
    (types_pb2.DT_HALF, "half_val", st.integers(0, 2**16 - 1)),
])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_packed_values_decode_like_tensorflow(data):
    dtype, field, values = data.draw(_typed)
    n = data.draw(st.integers(1, 40))
    vals = data.draw(st.lists(values, min_size=n, max_size=n))
    t = tensor_pb2.TensorProto(dtype=dtype)
    t.tensor_shape.dim.add(size=n)
    getattr(t, field).extend(vals)
    _, got = _decode(_request(t))
    if field == "int_val":  # TensorFlow's C++ static_cast wraps narrow integers
        want = np.array(vals, np.int64).astype(tf.dtypes.as_dtype(dtype).as_numpy_dtype)
    else:
        want = tf.make_ndarray(t)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_tensor_content_is_a_view_and_model_spec_survives():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    raw = _request(tf.make_tensor_proto(x))
    wp, got = _decode(raw)
    np.testing.assert_array_equal(got, x)
    assert not got.flags.owndata and got.base is not None  # no copy of the content
    msg = wp.message()
    assert msg.model_spec.name == "m" and list(msg.output_filter) == ["y"]
    assert msg.inputs["x"].tensor_content == b""  # the bulk stayed out of protobuf


def test_single_value_fills_the_shape_and_mismatches_are_invalid():
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32)
    for d in (2, 3):
        t.tensor_shape.dim.add(size=d)
    t.int_val.append(7)
    _, got = _decode(_request(t))
    assert got.shape == (2, 3) and (got == 7).all()
    t.int_val.append(8)
    with pytest.raises(ServingError) as err:
        _decode(_request(t))
    assert err.value.code == INVALID and "2 values given for shape [2, 3]" in err.value.message
    t = tf.make_tensor_proto(np.zeros((2, 2), np.float32))
    t.tensor_content = t.tensor_content[:-1]
    with pytest.raises(ServingError) as err:
        _decode(_request(t))
    assert err.value.code == INVALID and "tensor parsing error: x" in err.value.message


def test_declared_size_over_the_cap_is_refused_before_anything_is_decoded():
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for d in (1 << 40, 1 << 20):  # 2^60 floats declared
        t.tensor_shape.dim.add(size=d)
    t.float_val.append(1.0)
    raw = _request(t)
    assert len(raw) < 64
    wp = wire.read_predict(raw, 1 << 20, None)
    assert wp.error is not None and wp.error.code == EXHAUSTED
    assert "--max_request_bytes" in wp.error.message and "tensor parsing error: x" in wp.error.message
    # just under the cap is allowed (TensorFlow fills it from the one value)
    t2 = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    t2.tensor_shape.dim.add(size=1 << 18)
    t2.float_val.append(2.0)
    _, got = _decode(_request(t2), limit=1 << 20)
    assert got.shape == (1 << 18,) and got[-1] == 2.0


def test_empty_shape_whose_other_dims_overflow_is_invalid_not_a_crash():
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for d in (0, 2**62, 2**62):
        t.tensor_shape.dim.add(size=d)
    with pytest.raises(ServingError) as err:
        _decode(_request(t))
    assert err.value.code == INVALID and "overflows int64" in err.value.message


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=300))
def test_garbage_never_raises_from_the_deserializer(raw):
    wp = wire.read_predict(raw, 1 << 20, None)  # runs in gRPC's poll thread: must not raise
    try:
        req = wp.message()
        wp.decode(_spec(types_pb2.DT_FLOAT))
    except ServingError as err:
        assert err.code in (INVALID, EXHAUSTED), err
        return
    assert isinstance(req, predict_pb2.PredictRequest)


def test_unpacked_values_and_many_fields_take_the_protobuf_path():
    # element-by-element (unpacked) int64 values: field 10, wire type 0, one tag per value
    body = bytes([0x08, types_pb2.DT_INT64, 0x12, 0x04, 0x12, 0x02, 0x08, 0x03])  # dtype, shape [3]
    for v in (5, 6, 7):
        body += bytes([0x50, v])
    entry = bytes([0x0A, 0x01]) + b"x" + bytes([0x12, len(body)]) + body
    raw = bytes([0x12, len(entry)]) + entry
    _, got = _decode(raw)
    np.testing.assert_array_equal(got, [5, 6, 7])
    many = _request(tf.make_tensor_proto(np.zeros(3, np.float32))) + bytes([0x1A, 0x00]) * (wire.MAX_FIELDS + 5)
    wp, got = _decode(many)
    assert wp.tensors is None and got.shape == (3,)  # protobuf parsed it, same answer


def test_budget_charges_received_plus_declared_bytes_and_releases_once():
    budget = ByteBudget(10_000)
    raw = _request(tf.make_tensor_proto(np.zeros(1000, np.float32)))
    wp = wire.read_predict(raw, None, budget)
    assert wp.error is None and budget.used == len(raw) + 4000
    refused = wire.read_predict(raw, None, budget)
    assert refused.error is not None and refused.error.code == EXHAUSTED
    assert "--max_inflight_request_bytes" in refused.error.message and budget.used == len(raw) + 4000
    wp.release()
    wp.release()
    assert budget.used == 0
    dropped = wire.read_predict(raw, None, budget)
    assert budget.used > 0
    del dropped  # a request gRPC never handed to the handler still gives its bytes back
    assert budget.used == 0
