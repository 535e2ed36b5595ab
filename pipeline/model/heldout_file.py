"""The held-out set on disk: `heldout.npz` with `x` (what the saved model takes) and `y`.

Written for lazy rows batch by batch straight into an uncompressed zip member, so the
held-out pixels are never all in memory at once; the file is the same `.npz` that
`np.load` reads. The gate and the export read it back with `open_heldout`: `x` as a
`StoredArray` that slices like an array but reads only the rows asked for.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.model.feature_cache import FeatureFile
from pipeline.model.image_set import is_lazy, named_decode_errors
from pipeline.progress import Reporter


def save_heldout(path: Path, x: Any, y: np.ndarray, reporter: Reporter | None = None) -> None:
    """Write `path` (an `.npz` of x and y) under a temporary name, then rename it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        if not is_lazy(x):
            with partial.open("wb") as handle:
                np.savez(handle, x=x, y=y)
        else:
            _stream_npz(partial, x, y, reporter)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _stream_npz(path: Path, rows: Any, y: np.ndarray, reporter: Reporter | None) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(rows), *rows.row_shape)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member, named_decode_errors(rows):
            np.lib.format.write_array_header_1_0(member, header)
            for batch in rows.batches(reporter=reporter, label="write held-out set"):
                member.write(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
        with archive.open("y.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(y))


class StoredArray:
    """Rows of an `.npy` inside an uncompressed `.npz`, read on demand by slices."""

    def __init__(self, rows: FeatureFile) -> None:
        self._rows = rows
        self.shape = (rows.count, *rows.row_shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self._rows.count

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._rows.count)
            if step != 1:
                raise IndexError("StoredArray slices take step 1")
            return self._rows.rows(start, stop)
        if isinstance(key, (int, np.integer)):
            index = int(key) + (self._rows.count if key < 0 else 0)
            if not 0 <= index < self._rows.count:
                raise IndexError(f"row {key} of {self._rows.count}")
            return self._rows.rows(index, index + 1)[0]
        raise IndexError("StoredArray takes a row or a slice of rows")


LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip local file header: 30 bytes before name and extra


def open_heldout(path: Path) -> tuple[Any, np.ndarray]:
    """(x, y) of a held-out `.npz`: x read lazily when stored uncompressed, else loaded."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("x.npy")
        with archive.open("y.npy") as member:
            y = np.lib.format.read_array(member, allow_pickle=False)
    if info.compress_type != zipfile.ZIP_STORED:
        with np.load(path, allow_pickle=False) as loaded:
            return loaded["x"], y
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        fields = LOCAL_HEADER.unpack(handle.read(LOCAL_HEADER.size))
    name_length, extra_length = fields[-2], fields[-1]
    start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
    rows = FeatureFile.open(path, start, whole_file=False)
    if rows.dtype != np.float32:
        with np.load(path, allow_pickle=False) as loaded:
            return loaded["x"], y
    return StoredArray(rows), y
