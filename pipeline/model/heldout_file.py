"""The held-out set on disk: `heldout.npz` with `x` (what the saved model takes) and `y`.

Written for lazy rows batch by batch straight into an uncompressed zip member, so the
held-out pixels are never all in memory at once; the file is the same `.npz` that
`np.load` reads (the gate, the export's parity check and golden set).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

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
