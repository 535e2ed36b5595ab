"""Frozen-base activations computed once, kept on disk, and streamed back.

The head (and a fine-tuned top) trains on what the frozen layers below it output;
those outputs depend only on the frozen weights, the architecture, the pixels and
their scale, so they are computed in one streamed pass, written to a `.npy` file
named by a hash of all of that, and reused by every later run with the same key (a
second `make deploy`, a gate retry). A file is written under a temporary name and
renamed when complete, so a half-written cache is never read. Training reads rows
back with `pread` (not a memory map: mapped pages would count as the process's
memory), so memory stays bounded by the batch, not by the data set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import TransferError
from pipeline.progress import Reporter

CACHE_FORMAT = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)
IN_MEMORY_BYTES = 32 * 1024 * 1024  # a cache file this small is read into memory whole
READ_BATCH = 256
KEEP_ENTRIES = 24  # newest files kept in a cache folder; older ones are removed


@dataclass
class FeatureFile:
    """The rows of one `.npy` cache file, read on demand."""

    path: Path
    count: int
    row_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    offset: int

    @classmethod
    def open(cls, path: Path, start: int = 0, whole_file: bool = True) -> FeatureFile:
        """The `.npy` array at byte `start` of `path` (the file itself, or — `whole_file`
        false — a member stored uncompressed inside an `.npz`)."""
        with path.open("rb") as handle:
            handle.seek(start)
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        if fortran or len(shape) < 1:
            raise TransferError(f"{path}: an array file in an unexpected layout")
        expected = offset + int(np.prod(shape)) * dtype.itemsize
        size = path.stat().st_size
        if size != expected if whole_file else size < expected:
            raise TransferError(f"{path}: a truncated or damaged array file ({size} bytes, expected {expected})")
        return cls(path, int(shape[0]), tuple(int(d) for d in shape[1:]), dtype, offset)

    def __len__(self) -> int:
        return self.count

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.count * self.row_bytes

    def read(self, fd: int, positions: np.ndarray) -> np.ndarray:
        """Rows `positions` as float32, one pread per contiguous run."""
        out = np.empty((len(positions), *self.row_shape), dtype=self.dtype)
        flat = out.reshape(len(positions), -1).view(np.uint8)
        i = 0
        while i < len(positions):
            j = i + 1
            while j < len(positions) and positions[j] == positions[j - 1] + 1:
                j += 1
            start = self.offset + int(positions[i]) * self.row_bytes
            chunk = os.pread(fd, (j - i) * self.row_bytes, start)
            flat[i:j] = np.frombuffer(chunk, dtype=np.uint8).reshape(j - i, -1)
            i = j
        return out.astype(np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 (clipped to the file) as float32."""
        start, stop = max(0, start), min(stop, self.count)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return self.read(fd, np.arange(start, max(start, stop)))
        finally:
            os.close(fd)

    def fingerprint(self) -> str:
        """What these rows are: a cache file is named by the hash of what made it."""
        return f"{self.path.name}@{self.offset}:{self.count}"

    def batches(self, batch_size: int = READ_BATCH, reporter: Reporter | None = None,
                label: str = "", tensors: bool = False) -> Iterator[np.ndarray]:
        """Rows in order, `batch_size` at a time (the other arguments match ImageSet's)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for start in range(0, self.count, batch_size):
                yield self.read(fd, np.arange(start, min(start + batch_size, self.count)))
        finally:
            os.close(fd)

    def load(self) -> np.ndarray:
        """Every row in memory (float32)."""
        return self.rows(0, self.count)

    def training_dataset(self, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True) -> Any:
        """(rows, labels) batches; with `shuffle`, a new seeded permutation every epoch."""
        import tensorflow as tf

        rng = np.random.default_rng(seed)

        def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            order = rng.permutation(self.count) if shuffle else np.arange(self.count)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for start in range(0, self.count, batch_size):
                    rows = order[start:start + batch_size]
                    yield self.read(fd, rows), y[rows]
            finally:
                os.close(fd)

        signature = (tf.TensorSpec((None, *self.row_shape), tf.float32), tf.TensorSpec((None,), tf.int64))
        batches = -(-self.count // batch_size)  # a known length: Keras counts steps and epochs from it
        return (tf.data.Dataset.from_generator(generate, output_signature=signature)
                .apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2))


def rows_of(file: FeatureFile) -> np.ndarray | FeatureFile:
    """What training gets: a small file's rows in memory, a large one's on disk."""
    return file.load() if file.nbytes <= IN_MEMORY_BYTES else file


def model_fingerprint(model: Any) -> str:
    """A hash of a model's architecture and every weight's values."""
    digest = hashlib.sha256()
    try:
        digest.update(model.to_json().encode())
    except Exception:  # a layer without a config (a wrapped SavedModel): its names and shapes
        digest.update(repr([(layer.name, type(layer).__name__) for layer in model.layers]).encode())
    for weight in model.weights:
        value = np.asarray(weight)
        digest.update(f"{weight.path}\0{value.dtype}\0{value.shape}\n".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


_INFERENCE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def inference_function(model: Any) -> Any:
    """`model` in inference mode as one traced graph per model, any batch size: tracing a
    large net takes seconds, so every pass over it (train, validation, held-out) shares it."""
    import tensorflow as tf

    if model not in _INFERENCE:
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        held = weakref.ref(model)  # the function must not keep its own key alive

        def forward(batch: Any) -> Any:
            return held()(batch, training=False)  # type: ignore[misc]

        _INFERENCE[model] = tf.function(forward, input_signature=[spec])
    return _INFERENCE[model]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_written: int = 0
    bytes_reused: int = 0
    decode_s: float = 0.0  # time a pass waited for decoded images
    model_s: float = 0.0  # time a pass spent in the model
    sync_s: float = 0.0  # time spent making written files durable (fsync)
    images: int = 0
    dtypes: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "bytes_written": self.bytes_written,
                "bytes_reused": self.bytes_reused, "images_forwarded": self.images,
                "decode_wait_s": round(self.decode_s, 3), "model_s": round(self.model_s, 3),
                "sync_s": round(self.sync_s, 3),
                "dtypes": sorted(self.dtypes)}


class _Overflow(Exception):
    """An activation does not fit float16: the file is rewritten as float32."""


class FeatureCache:
    """Cache files under `root` (a temporary folder, removed by `close`, when None)."""

    def __init__(self, root: Path | None, reporter: Reporter | None = None) -> None:
        self._temporary = root is None
        self.root = Path(tempfile.mkdtemp(prefix="tfrollout-features-")) if root is None else root
        self.reporter = reporter or Reporter(quiet=True)
        self.stats = CacheStats()

    def close(self) -> None:
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key(self, model: Any, rows: Any) -> str:
        parts = {"format": CACHE_FORMAT, "model": model_fingerprint(model), "rows": rows.fingerprint()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]

    def features(self, model: Any, rows: Any, label: str) -> FeatureFile:
        """`model`'s outputs for `rows` (an ImageSet): from the cache, else computed and stored."""
        path = self.root / f"{self.key(model, rows)}.npy"
        if path.is_file():
            try:
                cached = FeatureFile.open(path)
            except (TransferError, OSError, ValueError):
                cached = None
            expected = tuple(int(d) for d in model.output_shape[1:])
            if cached is not None and cached.count == len(rows) and cached.row_shape == expected:
                os.utime(path)
                self.stats.hits += 1
                self.stats.bytes_reused += cached.nbytes
                self.stats.dtypes.add(str(cached.dtype))
                self.reporter.note(f"{label}: {cached.count} rows reused from the feature cache")
                return cached
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            written = self._write(model, rows, path, np.dtype(np.float16), label)
        except _Overflow:
            self.reporter.note(f"{label}: activations exceed float16's range; caching them as float32")
            written = self._write(model, rows, path, np.dtype(np.float32), label)
        self.stats.misses += 1
        self.stats.bytes_written += written.nbytes
        self.stats.dtypes.add(str(written.dtype))
        self._evict()
        return written

    def _write(self, model: Any, rows: Any, path: Path, dtype: np.dtype[Any], label: str) -> FeatureFile:
        row_shape = tuple(int(d) for d in model.output_shape[1:])
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial")
        try:
            with partial.open("wb") as handle:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": (len(rows), *row_shape)}
                np.lib.format.write_array_header_1_0(handle, header)
                self._forward_into(model, rows, handle, dtype, label)
                t0 = time.perf_counter()
                handle.flush()
                os.fsync(handle.fileno())
                self.stats.sync_s += time.perf_counter() - t0
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return FeatureFile.open(path)

    def _forward_into(self, model: Any, rows: Any, handle: Any, dtype: np.dtype[Any], label: str) -> None:
        forward = inference_function(model)
        stream = iter(rows.batches(reporter=self.reporter, label=label, tensors=True))
        while True:
            t0 = time.perf_counter()
            batch = next(stream, None)
            t1 = time.perf_counter()
            if batch is None:
                break
            out = np.asarray(forward(batch), dtype=np.float32)
            self.stats.decode_s += t1 - t0
            self.stats.model_s += time.perf_counter() - t1
            self.stats.images += len(batch)
            if not np.isfinite(out).all():
                raise TransferError(f"{label}: the frozen layers output NaN/Inf for some inputs; "
                                    "the source model or the data is broken")
            if dtype == np.float16 and float(np.abs(out).max(initial=0.0)) > FLOAT16_MAX:
                raise _Overflow
            handle.write(out.astype(dtype).tobytes())

    def stored(self, name: str, build: Callable[[Path], None]) -> Path:
        """The cache file `name`, made by `build(path)` when absent (build writes a
        temporary name and renames it: a half-made file is never found here)."""
        path = self.root / name
        if path.is_file():
            os.utime(path)
            self.stats.hits += 1
            self.stats.bytes_reused += path.stat().st_size
            return path
        self.root.mkdir(parents=True, exist_ok=True)
        build(path)
        self.stats.misses += 1
        self.stats.bytes_written += path.stat().st_size
        self._evict()
        return path

    def _evict(self) -> None:
        entries = sorted((p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP_ENTRIES:]:
            old.unlink(missing_ok=True)
