"""`data.source = "tfrecord"`: files of `tf.train.Example` records, as TFX's ExampleGen
and most image pipelines write them — an encoded image (JPEG/PNG/...) and a class label
per record, under feature names the config gives.

One pass reads the records (bytes only: no pixel decoded) and checks every record has
both features and a readable image header; the split is made on record indices; pixels
are decoded in parallel pass by pass (see image_set), or into arrays for small sets.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.model.data import Dataset, encode_labels, materialized, require_classes, split_indices
from pipeline.model.image_files import check_image_header, fixed_image_shape
from pipeline.progress import Reporter


def tfrecord_files(pattern: Path) -> list[Path]:
    """The record files `pattern` names: one file, a glob, or every regular file in a folder."""
    text = str(pattern)
    if pattern.is_dir():
        files = sorted(p for p in pattern.iterdir() if p.is_file() and not p.name.startswith("."))
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    else:
        files = [pattern] if pattern.is_file() else []
    if not files:
        raise DataError(f"no TFRecord files found at {pattern} (a file, a folder or a glob such as "
                        "'data/*.tfrecord')")
    return files


def _feature_value(example: object, key: str, kind: str, origin: str) -> object:
    """The single value of feature `key` (`kind`: bytes or label) of one parsed Example."""
    features = example.features.feature  # type: ignore[attr-defined]
    if key not in features:
        present = ", ".join(sorted(features)) or "none"
        raise DataError(f"{origin}: no {key!r} feature (present: {present}); set "
                        f"data.{'image' if kind == 'bytes' else 'label'}_feature")
    feature = features[key]
    which = feature.WhichOneof("kind")
    values = list(getattr(feature, which).value) if which else []
    if len(values) != 1 or (kind == "bytes" and which != "bytes_list") or which == "float_list":
        raise DataError(f"{origin}: feature {key!r} holds {len(values)} {which or 'empty'} value(s); "
                        f"expected one {'encoded image (bytes)' if kind == 'bytes' else 'int64 or string label'}")
    return values[0]


def read_records(files: list[Path], image_key: str,
                 label_key: str) -> tuple[list[bytes], list[str], np.ndarray, list[str]]:
    """(encoded images, "file#record" origins, raw labels, "FORMAT:mode" kinds) of every record in `files`."""
    import tensorflow as tf

    images: list[bytes] = []
    origins: list[str] = []
    labels: list[object] = []
    kinds: list[str] = []
    for file in files:
        count = 0
        try:
            for raw in tf.data.TFRecordDataset(str(file)).as_numpy_iterator():
                origin = f"{file}#record{count}"
                try:
                    example = tf.train.Example.FromString(raw)
                except Exception:  # protobuf's DecodeError: the bytes are not an Example
                    raise DataError(f"{origin}: not a tf.train.Example record") from None
                image = _feature_value(example, image_key, "bytes", origin)
                assert isinstance(image, bytes)
                kinds.append(check_image_header(image, origin))
                label = _feature_value(example, label_key, "label", origin)
                labels.append(label.decode("utf-8", "replace") if isinstance(label, bytes) else label)
                images.append(image)
                origins.append(origin)
                count += 1
        except tf.errors.OpError as exc:  # DataLossError: a bad length/CRC, i.e. not a TFRecord file
            reason = str(exc.message).splitlines()[0] if exc.message else type(exc).__name__
            raise DataError(f"{file}: not a readable TFRecord file ({type(exc).__name__}: {reason})") from None
        if count == 0:
            raise DataError(f"{file}: holds no records")
    return images, origins, np.array(labels), kinds


def load_tfrecords(pattern: Path, input_shape: tuple[int | None, ...], test_fraction: float, seed: int,
                   image_key: str, label_key: str, reporter: Reporter | None = None) -> Dataset:
    """Records decoded into arrays (see `tfrecord_rows`)."""
    return materialized(tfrecord_rows(pattern, input_shape, test_fraction, seed, image_key, label_key),
                        reporter, "records")


def tfrecord_rows(pattern: Path, input_shape: tuple[int | None, ...], test_fraction: float, seed: int,
                  image_key: str, label_key: str) -> Dataset:
    """Records of (encoded image, label) as lazy rows resized to the model input, split
    stratified on the index. The encoded bytes stay in memory (a JPEG is ≈1/30 of its
    decoded float32 pixels); pixels are decoded pass by pass (see image_set)."""
    from pipeline.model.image_set import ImageSet

    shape = fixed_image_shape(input_shape, str(pattern))
    files = tfrecord_files(pattern)
    images, origins, raw_labels, kinds = read_records(files, image_key, label_key)
    y, names = encode_labels(raw_labels)
    require_classes(y, str(pattern))
    train, test = split_indices(y, names, test_fraction, seed, str(pattern))
    rows = ImageSet(images, origins, np.arange(len(images)), shape, kinds=kinds)
    return Dataset(rows[train], y[train], rows[test], y[test], names)
