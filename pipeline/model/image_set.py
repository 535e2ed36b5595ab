"""Images of a data set that stay encoded until a pass needs them.

An image folder or a TFRecord set is held as its index (file paths or encoded
records, labels, which rows) and decoded batch by batch by `tf.data` each time a
pass runs: memory is bounded by the batch and prefetch sizes, not by the number of
images. Selecting rows (`images[idx]`) and changing the pixel scale are free; a
decode failure still ends in one line naming the file (see image_files).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.model.image_files import decode_image
from pipeline.progress import Reporter

PASS_BATCH = 64  # images per decoded batch of a forward pass


@dataclass(frozen=True)
class ImageSet:
    """The rows `indices` of `items`, decoded to `shape` (height, width, channels).

    `mode` is the pixel scale a pass yields: "none" keeps the loaders' [0, 1]; any
    other preprocess mode maps raw 0-255 pixels (see preprocess.apply)."""

    items: Sequence[Path | bytes]
    origins: Sequence[str]
    indices: np.ndarray
    shape: tuple[int, int, int]
    mode: str = "none"
    failures: list[DataError] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows: Any) -> ImageSet:
        """A subset (an index array or a slice); shares the decode-failure record."""
        return replace(self, indices=self.indices[rows], failures=self.failures)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape

    def with_mode(self, mode: str) -> ImageSet:
        return replace(self, mode=mode, failures=self.failures)

    def decode(self, position: int) -> np.ndarray:
        """Row `position` as float32 in this set's scale."""
        from pipeline.model.preprocess import apply

        item = int(self.indices[position])
        height, width, channels = self.shape
        try:
            image = decode_image(self.items[item], self.origins[item], (width, height), channels)
        except DataError as exc:
            self.failures.append(exc)
            raise
        if self.mode == "none":
            return image
        return np.asarray(apply(image * np.float32(255.0), self.mode), dtype=np.float32)

    def _decode_op(self, position: Any) -> Any:
        """The graph op tf.data's parallel map runs: Pillow releases the GIL as it decodes."""
        import tensorflow as tf

        image = tf.numpy_function(lambda p: self.decode(int(p)), [position], tf.float32, stateful=False)
        return tf.ensure_shape(image, self.shape)

    def dataset(self, batch_size: int = PASS_BATCH) -> Any:
        """Batches of images in row order (a forward pass)."""
        import tensorflow as tf

        return (tf.data.Dataset.range(len(self))
                .map(self._decode_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size).prefetch(2))

    def training_dataset(self, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True) -> Any:
        """(images, labels) batches; with `shuffle` reshuffled every epoch (the index is
        shuffled, not pixels, so the whole set is one shuffle buffer at 16 bytes a row)."""
        import tensorflow as tf

        pairs = tf.data.Dataset.from_tensor_slices((np.arange(len(self), dtype=np.int64),
                                                    np.asarray(y, dtype=np.int64)))
        if shuffle:
            pairs = pairs.shuffle(max(1, len(self)), seed=seed, reshuffle_each_iteration=True)

        def one(position: Any, label: Any) -> Any:
            return self._decode_op(position), label

        return (pairs.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size).prefetch(2))

    def batches(self, batch_size: int = PASS_BATCH, reporter: Reporter | None = None,
                label: str = "decode images") -> Iterator[np.ndarray]:
        """Decoded batches in row order; a bar with images/s when a reporter is given."""
        import time

        t0 = time.perf_counter()
        done = 0
        with named_decode_errors(self), (reporter or Reporter(quiet=True)).progress(
                label, len(self), unit="images") as advance:
            for batch in self.dataset(batch_size).as_numpy_iterator():
                done += len(batch)
                advance(len(batch), status=f"{done / max(time.perf_counter() - t0, 1e-9):,.0f} images/s")
                yield batch

    def materialize(self, reporter: Reporter | None = None, label: str = "decode images") -> np.ndarray:
        """Every row decoded into one array (for small subsets: golden set, warmup)."""
        out = np.empty((len(self), *self.shape), dtype=np.float32)
        start = 0
        for batch in self.batches(reporter=reporter, label=label):
            out[start:start + len(batch)] = batch
            start += len(batch)
        return out

    def fingerprint(self) -> str:
        """A hash of what the pixels are made from: each selected file's path, size and
        mtime (or each record's bytes), the rows, the decoded shape and the scale."""
        digest = hashlib.sha256()
        digest.update(repr((self.shape, self.mode, len(self.indices))).encode())
        digest.update(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes())
        for item in (self.items[int(i)] for i in self.indices):
            if isinstance(item, bytes):
                digest.update(hashlib.sha256(item).digest())
            else:
                stat = item.stat()
                digest.update(f"{item}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


@contextlib.contextmanager
def named_decode_errors(rows: Any) -> Iterator[None]:
    """Re-raise the first decode failure of `rows` as its own one-line DataError: tf.data
    wraps a worker's exception in an OpError that names no file."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.OpError, RuntimeError, ValueError):
        failures = getattr(rows, "failures", None)
        if failures:
            raise failures[0] from None
        raise


def is_lazy(x: Any) -> bool:
    """True for rows that are read or decoded pass by pass rather than held in memory."""
    return not isinstance(x, np.ndarray)
