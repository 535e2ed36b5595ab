"""Images of a data set that stay encoded until a pass needs them.

An image folder or a TFRecord set is held as its index (file paths or encoded
records, labels, which rows) and decoded batch by batch by `tf.data` each time a
pass runs: memory is bounded by the batch and prefetch sizes, not by the number of
images. Selecting rows (`images[idx]`) and changing the pixel scale are free; a
decode failure still ends in one line naming the file (see image_files).

8-bit greyscale/RGB JPEGs and PNGs whose mode matches the model's channels are decoded
by TensorFlow's own ops (no GIL: both cores decode while the model runs); everything
else (16-bit, palette, TIFF, WebP, a channel conversion) by Pillow as before. Both
resize bicubically with antialiasing to the model size and round to 8-bit values, so
either decoder yields the pixels the other would, up to the JPEG library's rounding.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.model.image_files import ChannelConversion, channel_conversion, decode_image
from pipeline.progress import Reporter

PASS_BATCH = 64  # images per decoded batch of a forward pass
NATIVE_KINDS = {1: {"JPEG:L", "PNG:L"}, 3: {"JPEG:RGB", "PNG:RGB"}}  # by the model's channel count


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
    kinds: Sequence[str] | None = None  # each item's "FORMAT:mode" from the header pass
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

    def native(self) -> np.ndarray:
        """Per row: True where TensorFlow's decoder takes the item (see the module docstring)."""
        return self.decoders() > 0

    def decoders(self) -> np.ndarray:
        """Per row: 0 Pillow, 1 TensorFlow's JPEG decoder, 2 its PNG decoder."""
        if self.kinds is None:
            return np.zeros(len(self), dtype=np.int32)
        accepted = NATIVE_KINDS.get(self.shape[-1], set())
        kinds = [self.kinds[int(i)] for i in self.indices]
        return np.array([0 if k not in accepted else 1 if k.startswith("JPEG:") else 2 for k in kinds], dtype=np.int32)

    def mode_counts(self) -> Counter[str]:
        """Rows per Pillow pixel mode, from the header pass's kinds (no pixel read; empty
        without kinds): what `channel_conversion` is judged on."""
        if self.kinds is None:
            return Counter()
        kinds = self.kinds
        return Counter(kinds[int(i)].partition(":")[2] for i in self.indices)

    def encoded(self, position: int) -> bytes:
        """Row `position`'s file bytes (for TensorFlow's decoder)."""
        item = self.items[int(self.indices[position])]
        return item if isinstance(item, bytes) else Path(item).read_bytes()

    def file_names(self) -> np.ndarray:
        """Per row: the file path TensorFlow reads itself, or "" for in-memory bytes."""
        names = ["" if isinstance(item, bytes) else str(item) for item in (self.items[int(i)] for i in self.indices)]
        return np.array(names, dtype=object)

    def _decode_op(self, position: Any, decoder: Any, file_name: Any, *, present: set[int],
                   files_only: bool) -> Any:
        """The graph op tf.data's parallel map runs for one row (`decoder`: see `decoders`).

        Files are read by TensorFlow too, and a set that needs only TensorFlow's decoders
        (`files_only`, one decoder `present`) gets a graph without any Python in it: the
        map runs on every core and leaves the GIL to the thread that feeds the model."""
        import tensorflow as tf

        channels = self.shape[-1]

        def by_pillow() -> Any:  # Pillow releases the GIL for most of its decode
            return tf.numpy_function(lambda p: self.decode(int(p)), [position], tf.float32, stateful=False)

        def read() -> Any:
            if files_only:
                return tf.io.read_file(file_name)
            return tf.cond(tf.equal(file_name, ""),
                           lambda: tf.reshape(tf.numpy_function(lambda p: self.encoded(int(p)), [position],
                                                                tf.string, stateful=False), []),
                           lambda: tf.io.read_file(file_name))

        def by_tensorflow(jpeg: bool) -> Any:
            raw = read()
            if jpeg:  # the accurate integer IDCT, as Pillow's libjpeg uses (TF's default is the fast one)
                image = tf.io.decode_jpeg(raw, channels=channels, dct_method="INTEGER_ACCURATE")
            else:
                image = tf.io.decode_png(raw, channels=channels)
            image = tf.cast(image, tf.float32)

            def resized() -> Any:  # as Pillow's bicubic (antialiased when shrinking), rounded to 8 bits
                out = tf.image.resize(image, self.shape[:2], method="bicubic", antialias=True)
                return tf.clip_by_value(tf.round(out), 0.0, 255.0)

            same = tf.reduce_all(tf.equal(tf.shape(image)[:2], self.shape[:2]))
            return self._scaled(tf.cond(same, lambda: image, resized) / 255.0)

        branches = [by_pillow, lambda: by_tensorflow(True), lambda: by_tensorflow(False)]
        image = branches[next(iter(present))]() if len(present) == 1 else tf.switch_case(decoder, branches)
        return tf.ensure_shape(image, self.shape)

    def _scaled(self, unit: Any) -> Any:
        """[0, 1] pixels in this set's scale, with the formula `decode` uses."""
        import keras

        from pipeline.model.preprocess import apply

        if self.mode == "none":
            return unit
        return keras.ops.cast(apply(unit * 255.0, self.mode, keras.ops), "float32")

    def _columns(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Any]:
        """((position, decoder, file name) per row, the decode op for them): computed once
        per pass, so the op knows which decoders the rows need."""
        decoders, names = self.decoders(), self.file_names()
        op = functools.partial(self._decode_op, present=set(decoders.tolist()), files_only=bool(np.all(names != "")))
        return (np.arange(len(self), dtype=np.int64), decoders, names), op

    def dataset(self, batch_size: int = PASS_BATCH) -> Any:
        """Batches of images in row order (a forward pass)."""
        import tensorflow as tf

        columns, decode_op = self._columns()
        return (tf.data.Dataset.from_tensor_slices(columns)
                .map(decode_op, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size).prefetch(2))

    def training_dataset(self, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True) -> Any:
        """(images, labels) batches; with `shuffle` reshuffled every epoch (the index is
        shuffled, not pixels, so the whole set is one shuffle buffer at 16 bytes a row)."""
        import tensorflow as tf

        columns, decode_op = self._columns()
        pairs = tf.data.Dataset.from_tensor_slices((*columns, np.asarray(y, dtype=np.int64)))
        if shuffle:
            pairs = pairs.shuffle(max(1, len(self)), seed=seed, reshuffle_each_iteration=True)

        def one(position: Any, decoder: Any, file_name: Any, label: Any) -> Any:
            return decode_op(position, decoder, file_name), label

        return (pairs.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size).prefetch(2))

    def batches(self, batch_size: int = PASS_BATCH, reporter: Reporter | None = None,
                label: str = "decode images", tensors: bool = False) -> Iterator[Any]:
        """Decoded batches in row order (NumPy arrays, or TensorFlow tensors with `tensors`
        for a model to take without a copy); a bar with images/s when a reporter is given."""
        import time

        t0 = time.perf_counter()
        done = 0
        dataset = self.dataset(batch_size)
        with named_decode_errors(self), (reporter or Reporter(quiet=True)).progress(
                label, len(self), unit="images") as advance:
            for batch in (dataset if tensors else dataset.as_numpy_iterator()):
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

    def first_failure(self) -> DataError | None:
        """The first row Pillow cannot decode, as its one-line error (a slow scan: only
        run after TensorFlow's decoder failed somewhere, to name the file)."""
        for position in range(len(self)):
            try:
                self.decode(position)
            except DataError as exc:
                return exc
        return None

    @functools.cached_property
    def _fingerprint(self) -> str:
        """Computed once per set (a run asks for it several times: each cache key)."""
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

    def fingerprint(self) -> str:
        """A hash of what the pixels are made from: each selected file's path, size and
        mtime (or each record's bytes), the rows, the decoded shape and the scale."""
        return self._fingerprint


@contextlib.contextmanager
def named_decode_errors(rows: Any) -> Iterator[None]:
    """Re-raise the first decode failure of `rows` as its own one-line DataError: tf.data
    wraps a worker's exception in an OpError that names no file."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.OpError, RuntimeError, ValueError) as exc:
        failures = getattr(rows, "failures", None)
        if failures:
            raise failures[0] from None
        if isinstance(exc, tf.errors.InvalidArgumentError) and isinstance(rows, ImageSet):
            found = rows.first_failure()  # TensorFlow's decoder names no file: find it
            if found is not None:
                raise found from None
            message = str(exc.message).splitlines()[0] if exc.message else type(exc).__name__
            raise DataError(f"an image could not be decoded by TensorFlow ({message})") from None
        raise


def channel_conversion_of(*row_sets: Any) -> ChannelConversion | None:
    """The channel conversion the decode applies to these rows together (e.g. a data set's
    training and held-out rows), counted from their header kinds; None for arrays, rows
    without kinds, or when every image already has the model's channels."""
    sets = [rows for rows in row_sets if isinstance(rows, ImageSet)]
    if not sets:
        return None
    modes: Counter[str] = Counter()
    for rows in sets:
        if rows.kinds is None:
            return None
        modes.update(rows.mode_counts())
    return channel_conversion(modes, sets[0].shape[-1])


def is_lazy(x: Any) -> bool:
    """True for rows that are read or decoded pass by pass rather than held in memory."""
    return not isinstance(x, np.ndarray)
