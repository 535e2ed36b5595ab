"""`data.source = "npz"` read in chunks: `x` is never held whole beside its split copies.

The labels are read first (small); the samples' header (dtype, shape) is checked
without reading a row; the stratified split is made on the labels; then `x` is read
from its zip member a chunk of rows at a time, each chunk checked (finite numbers)
and scattered into the training or held-out array. Peak memory is the two split
arrays plus one chunk, whatever the file's size or compression.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from pipeline.errors import DataError
from pipeline.model.data import (
    NUMERIC_KINDS,
    Dataset,
    encode_labels,
    fitted_sample_shape,
    require_classes,
    require_labels,
    require_numeric,
    split_indices,
)

CHUNK_BYTES = 32 * 2**20  # rows of x read at a time


def _member_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of a .npy stream, leaving it at the first data byte."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise DataError(f".npy format version {version} is not supported (1.0 and 2.0 are)")


def load_npz(path: Path, input_shape: tuple[int | None, ...], test_fraction: float, seed: int) -> Dataset:
    """An .npz with arrays `x` (samples) and `y` (labels) of equal length."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    origin = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
            missing = {"x", "y"} - names
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; expected 'x' and 'y'")
            with archive.open("y.npy") as member:
                y_raw = np.lib.format.read_array(member, allow_pickle=False)
            with archive.open("x.npy") as member:
                shape, fortran, dtype = _member_header(member)
                if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
                    raise DataError(f"{path}: x holds {dtype} values; numeric samples (float/int/bool) are needed")
                if len(shape) == 0 or shape[0] != len(y_raw):
                    raise DataError(f"{path}: x has {shape[0] if shape else 0} samples but y has "
                                    f"{len(y_raw)} labels")
                if y_raw.ndim != 1:
                    raise DataError(f"{path}: y must be 1-D class labels, got shape {y_raw.shape}")
                require_labels(y_raw, origin)
                y, classes = encode_labels(y_raw)
                require_classes(y, origin)
                sample = fitted_sample_shape(tuple(shape[1:]), input_shape, origin)
                train, test = split_indices(y, classes, test_fraction, seed, origin)
                if fortran:  # column-major rows are not contiguous: read whole (rare; np.save writes C order)
                    member.close()
                    with archive.open("x.npy") as again:
                        x = np.lib.format.read_array(again, allow_pickle=False)
                    require_numeric(x, origin)
                    x = x.reshape(len(x), *sample).astype(np.float32, copy=False)
                    return Dataset(x[train], y[train], x[test], y[test], classes)
                x_train, x_test = _scatter_rows(member, dtype, tuple(shape[1:]), sample, train, test, origin)
    except DataError:
        raise
    except Exception as exc:  # zipfile/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    return Dataset(x_train, y[train], x_test, y[test], classes)


def _scatter_rows(member: IO[bytes], dtype: np.dtype, row_shape: tuple[int, ...], sample: tuple[int, ...],
                  train: np.ndarray, test: np.ndarray, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """Read rows in chunks into float32 train/held-out arrays (where = position in each)."""
    count = len(train) + len(test)
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize)
    per_chunk = max(1, CHUNK_BYTES // row_bytes)
    side = np.zeros(count, dtype=np.int8)  # 0 train, 1 held out
    side[test] = 1
    position = np.empty(count, dtype=np.int64)
    position[train] = np.arange(len(train))
    position[test] = np.arange(len(test))
    x_train = np.empty((len(train), *sample), dtype=np.float32)
    x_test = np.empty((len(test), *sample), dtype=np.float32)
    for start in range(0, count, per_chunk):
        rows = min(per_chunk, count - start)
        raw = member.read(rows * row_bytes)
        if len(raw) != rows * row_bytes:
            raise DataError(f"{origin}: x ends after {start + len(raw) // row_bytes} of {count} rows "
                            "(a truncated file)")
        chunk = np.frombuffer(raw, dtype=dtype).reshape(rows, *sample)
        require_numeric(chunk, origin)
        where = slice(start, start + rows)
        to_train = side[where] == 0
        x_train[position[where][to_train]] = chunk[to_train]
        x_test[position[where][~to_train]] = chunk[~to_train]
    return x_train, x_test
