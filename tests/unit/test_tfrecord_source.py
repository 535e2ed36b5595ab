"""The tfrecord source on real TFRecord files written here with TensorFlow's own writer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.errors import DataError
from pipeline.model.tfrecord_source import load_tfrecords


def _png(value: int, size: tuple[int, int] = (12, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _example(image: bytes | None, label: int | bytes | None, image_key: str = "image/encoded",
             label_key: str = "image/class/label") -> bytes:
    feature = {}
    if image is not None:
        feature[image_key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
    if isinstance(label, int):
        feature[label_key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    elif isinstance(label, bytes):
        feature[label_key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write(path: Path, records: list[bytes]) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def test_records_in_two_shards_load_with_labels_pixels_and_a_stratified_split(tmp_path: Path):
    """Class-dependent pixels: every decoded image must carry its own record's label."""
    _write(tmp_path / "a.tfrecord", [_example(_png(10), 3) for _ in range(5)])
    _write(tmp_path / "b.tfrecord", [_example(_png(250), 7) for _ in range(5)])
    data = load_tfrecords(tmp_path / "*.tfrecord", (8, 8, 1), 0.4, 0, "image/encoded", "image/class/label")
    assert data.class_names == ("3", "7")
    assert data.x_train.shape == (6, 8, 8, 1) and data.x_test.shape == (4, 8, 8, 1)
    assert sorted(np.bincount(data.y_test)) == [2, 2]
    x = np.concatenate([data.x_train, data.x_test])
    y = np.concatenate([data.y_train, data.y_test])
    assert np.allclose(x[y == 0], 10 / 255) and np.allclose(x[y == 1], 250 / 255)


def test_the_split_does_not_depend_on_the_seed_of_anything_but_data_seed(tmp_path: Path):
    records = [_example(_png(i * 20), b"cat" if i % 2 else b"dog") for i in range(12)]
    _write(tmp_path / "all.tfrecord", records)
    first = load_tfrecords(tmp_path / "all.tfrecord", (8, 8, 1), 0.5, 1, "image/encoded", "image/class/label")
    again = load_tfrecords(tmp_path, (8, 8, 1), 0.5, 1, "image/encoded", "image/class/label")
    assert first.class_names == ("cat", "dog")
    assert np.array_equal(first.x_test, again.x_test) and np.array_equal(first.y_test, again.y_test)


def test_feature_names_are_configurable(tmp_path: Path):
    _write(tmp_path / "x.rec", [_example(_png(v), v // 100, "img", "cls") for v in (1, 2, 201, 202)])
    data = load_tfrecords(tmp_path / "x.rec", (8, 8, 3), 0.5, 0, "img", "cls")
    assert data.x_train.shape[1:] == (8, 8, 3) and data.num_classes == 2


@pytest.mark.parametrize("records, message", [
    ([_example(_png(1), None)], r"x\.tfrecord#record0: no 'image/class/label' feature \(present: image/encoded\)"),
    ([_example(None, 1)], r"#record0: no 'image/encoded' feature"),
    ([_example(_png(1), 1), _example(b"", 2)], r"#record1: empty file \(0 bytes\)"),
    ([_example(b"GIF89a not really", 2)], r"#record0: not a readable image"),
    ([b"\x01\x02 not an Example"], r"#record0: not a tf.train.Example record"),
])
def test_bad_records_are_one_line_naming_file_and_record(tmp_path: Path, records: list[bytes], message: str):
    _write(tmp_path / "x.tfrecord", records)
    with pytest.raises(DataError, match=message):
        load_tfrecords(tmp_path / "x.tfrecord", (8, 8, 1), 0.3, 0, "image/encoded", "image/class/label")


def test_a_file_that_is_not_a_tfrecord_is_named(tmp_path: Path):
    _write(tmp_path / "good.tfrecord", [_example(_png(1), 1), _example(_png(2), 2)])
    (tmp_path / "junk.tfrecord").write_bytes(b"this is a text file, not length-prefixed records\n" * 4)
    with pytest.raises(DataError, match=r"junk\.tfrecord: not a readable TFRecord file \(DataLossError"):
        load_tfrecords(tmp_path / "*.tfrecord", (8, 8, 1), 0.3, 0, "image/encoded", "image/class/label")


def test_no_matching_files_and_empty_files_are_refused(tmp_path: Path):
    with pytest.raises(DataError, match="no TFRecord files found"):
        load_tfrecords(tmp_path / "*.tfrecord", (8, 8, 1), 0.3, 0, "image/encoded", "image/class/label")
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.tfrecord: holds no records"):
        load_tfrecords(tmp_path / "empty.tfrecord", (8, 8, 1), 0.3, 0, "image/encoded", "image/class/label")
