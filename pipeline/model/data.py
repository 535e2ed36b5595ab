"""Target-domain data: the offline digits demo, a folder of images, or an .npz.

Loading is separate from training so that a bad data set is reported before any
model work starts, with a message naming the file or folder at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.model.image_files import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, image_to_array
from pipeline.progress import Reporter

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "image_to_array"]  # kept importable from here

NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a model input can be made of
DEMO_CLASSES = tuple("0123456789")
DEMO_COPIES_PER_GLYPH = 40  # augmented renderings of each digit in each font (8,400 source images)


@dataclass(frozen=True)
class Dataset:
    """A labelled training set and a held-out test set, labels as 0..K-1.

    x is an array in memory, or lazy rows (image_set.ImageSet) for image folders and
    TFRecords, which every consumer streams instead of holding decoded."""

    x_train: Any
    y_train: np.ndarray
    x_test: Any
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- pure helpers


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) keeping each class's share; every class keeps ≥1 train example."""
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    test_idx: list[int] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = min(int(round(len(members) * test_fraction)), len(members) - 1)
        test_idx.extend(members[:n_test])
        train_idx.extend(members[n_test:])
    return np.sort(np.array(train_idx, dtype=np.int64)), np.sort(np.array(test_idx, dtype=np.int64))


def few_shot_indices(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Pick `per_class` examples of every class (the few labelled target examples)."""
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < per_class:
            raise DataError(f"class {label} has only {len(members)} examples, {per_class} requested")
        picked.extend(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.array(picked, dtype=np.int64))


def encode_labels(raw: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map arbitrary labels to 0..K-1 in sorted order of the original values."""
    values, encoded = np.unique(raw, return_inverse=True)
    return encoded.astype(np.int64), tuple(str(v) for v in values)


def fit_to_input(x: np.ndarray, input_shape: tuple[int | None, ...], origin: str) -> np.ndarray:
    """Check `x` (N, ...) matches the model's input shape; add a channel axis if that is all it lacks."""
    sample = fitted_sample_shape(tuple(x.shape[1:]), input_shape, origin)
    return x.reshape(len(x), *sample).astype(np.float32, copy=False)


def fitted_sample_shape(got: tuple[int, ...], input_shape: tuple[int | None, ...], origin: str) -> tuple[int, ...]:
    """The sample shape `got` as the model takes it (a missing last channel of 1 added), or a DataError."""
    expected = tuple(input_shape)
    if len(got) + 1 == len(expected) and expected[-1] == 1:
        got = (*got, 1)
    compatible = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not compatible:
        shown = tuple(-1 if d is None else d for d in expected)
        raise DataError(f"{origin}: sample shape {got} does not fit the model input shape {shown}")
    return got


def require_classes(y: np.ndarray, origin: str) -> None:
    if len(np.unique(y)) < 2:
        raise DataError(f"{origin}: found {len(np.unique(y))} class; at least 2 classes are needed")


def split_dataset(x: np.ndarray, y: np.ndarray, names: tuple[str, ...],
                  test_fraction: float, seed: int, origin: str = "data") -> Dataset:
    """Stratified split of arrays already in memory (see `split_indices`)."""
    train, test = split_indices(y, names, test_fraction, seed, origin)
    return Dataset(x[train], y[train], x[test], y[test], names)


def split_indices(y: np.ndarray, names: tuple[str, ...], test_fraction: float, seed: int,
                  origin: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) indices leaving every class one example on each side.

    Transfer is judged on held-out accuracy; with no held-out example there is nothing
    to judge, so that is an error here rather than an empty evaluation later. Decided
    on labels alone, so a file list can be split before any pixel is decoded.
    """
    counts = np.bincount(y, minlength=len(names))
    if counts.min() < 2:
        label = names[int(np.argmin(counts))]
        raise DataError(f"{origin}: class {label!r} has {counts.min()} example(s); at least 2 per class are "
                        "needed (one to train on, one to hold out)")
    train, test = stratified_split(y, test_fraction, seed)
    if len(test) == 0:
        raise DataError(f"{origin}: {len(y)} examples with test_fraction={test_fraction} leave no held-out "
                        "example; add data or raise data.test_fraction")
    return train, test


def require_labels(y: np.ndarray, origin: str) -> None:
    """Class labels are integers or strings; whole-number floats (1.0) count as integers."""
    if y.dtype.kind in "biuUS":
        return
    if y.dtype.kind == "f" and np.isfinite(y).all() and np.array_equal(y, np.round(y)):
        return
    raise DataError(f"{origin}: y holds {y.dtype} values that are not class labels "
                    "(integers or strings; NaN and fractions are refused)")


def require_numeric(x: np.ndarray, origin: str) -> None:
    """Samples must be finite numbers: strings, objects or NaN/Inf cannot be trained on."""
    if x.dtype.kind not in NUMERIC_KINDS:
        raise DataError(f"{origin}: x holds {x.dtype} values; numeric samples (float/int/bool) are needed")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{origin}: x holds {bad} NaN/Inf value(s); clean the data first")


# --------------------------------------------------------------------------- sources


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (ships with the package: no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., np.newaxis]
    return x, digits.target.astype(np.int64)


def demo_source_domain(test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Printed digits 0-9 rendered from the fonts matplotlib ships (augmented, reduced to 8x8
    as the handwritten set was): the demo source model's domain. Plenty of labels, but print,
    not handwriting — the pre-trained asset a team would have."""
    from pipeline.model.glyphs import glyph_domain

    x, y, names = glyph_domain("".join(DEMO_CLASSES), DEMO_COPIES_PER_GLYPH, seed)
    return split_dataset(x, y, names, test_fraction, seed, "demo source (rendered digits)")


def demo_target_domain(labels_per_class: int, test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's handwritten digits 0-9: `labels_per_class` labelled examples per class
    (the few a team could label by hand), `test_fraction` of the collection held out."""
    x, y = load_digits_arrays()
    pool, test = stratified_split(y, test_fraction, seed)
    labelled = pool[few_shot_indices(y[pool], labels_per_class, seed)]
    return Dataset(x[labelled], y[labelled], x[test], y[test], DEMO_CLASSES)


def load_image_dir(path: Path, input_shape: tuple[int | None, ...], test_fraction: float,
                   seed: int, reporter: Reporter | None = None) -> Dataset:
    """A folder with one sub-folder of images per class, decoded into arrays (see `image_dir_rows`)."""
    return materialized(image_dir_rows(path, input_shape, test_fraction, seed), reporter, "images")


def image_dir_rows(path: Path, input_shape: tuple[int | None, ...], test_fraction: float,
                   seed: int) -> Dataset:
    """A folder with one sub-folder of images per class, as lazy rows resized to the model input.

    Indexed and header-checked first and split on the index; no pixel is decoded here
    (see image_set: each pass decodes its batches)."""
    from pipeline.model.image_files import fixed_image_shape, image_folder_index
    from pipeline.model.image_set import ImageSet

    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    shape = fixed_image_shape(input_shape, str(path))
    files, labels, names, kinds = image_folder_index(path)
    train, test = split_indices(labels, names, test_fraction, seed, str(path))
    rows = ImageSet(list(files), [str(f) for f in files], np.arange(len(files)), shape, kinds=kinds)
    return Dataset(rows[train], labels[train], rows[test], labels[test], names)


def materialized(data: Dataset, reporter: Reporter | None, what: str) -> Dataset:
    """A Dataset of lazy rows decoded into one array per split (small sets, tests, benchmarks)."""
    from pipeline.model.image_set import is_lazy

    def decoded(x: Any, label: str) -> np.ndarray:
        return x.materialize(reporter, label) if is_lazy(x) else x

    return Dataset(decoded(data.x_train, f"decode training {what}"), data.y_train,
                   decoded(data.x_test, f"decode held-out {what}"), data.y_test, data.class_names)
