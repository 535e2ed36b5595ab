"""Codec round trips and edge cases, without TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.client import codec
from serving.client._generated import tfrollout_wire_pb2 as wire

NUMERIC = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
           np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64, np.complex128]


def _roundtrip(array: np.ndarray) -> np.ndarray:
    return codec.decode(wire.Tensor.FromString(codec.encode(array).SerializeToString()))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(NUMERIC), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_numeric_roundtrip(array: np.ndarray) -> None:
    out = _roundtrip(array)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_decode_is_a_zero_copy_view_of_tensor_content() -> None:
    tensor = codec.encode(np.arange(12, dtype=np.float32).reshape(3, 4))
    out = codec.decode(tensor)
    assert not out.flags.writeable  # a view on the message's bytes, not a copy
    assert out.base is not None


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(5, dtype=">i4")
    tensor = codec.encode(array)
    assert tensor.tensor_content == np.arange(5, dtype="<i4").tobytes()
    np.testing.assert_array_equal(codec.decode(tensor), array)


def test_strings_unicode_and_bytes() -> None:
    out = _roundtrip(np.array(["h\u00e9", "x"]))
    assert out.dtype == object and out.tolist() == ["h\u00e9".encode(), b"x"]


def test_non_contiguous_input() -> None:
    array = np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(_roundtrip(array), array)


def test_content_of_wrong_size_is_an_error() -> None:
    tensor = codec.encode(np.zeros((2, 2), np.float32))
    tensor.tensor_content = tensor.tensor_content[:-4]
    with pytest.raises(codec.CodecError, match="needs 16"):
        codec.decode(tensor)


def test_unsupported_dtypes_are_named() -> None:
    with pytest.raises(codec.CodecError, match="datetime64"):
        codec.encode(np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(codec.CodecError, match="DT_20"):
        codec.decode(wire.Tensor(dtype=20))


def test_typed_list_shorter_than_shape_repeats_last_value() -> None:
    tensor = wire.Tensor(dtype=wire.DT_INT64)
    tensor.tensor_shape.dim.add(size=4)
    tensor.int64_val.extend([5, 9])
    np.testing.assert_array_equal(codec.decode(tensor), [5, 9, 9, 9])
