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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 40_000_000  # a 40 MP photo decodes to ≈120 MB; anything larger is refused unread
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a model input can be made of
DEMO_CLASSES = tuple("0123456789")
DEMO_COPIES_PER_GLYPH = 40  # augmented renderings of each digit in each font (8,400 source images)


@dataclass(frozen=True)
class Dataset:
    """A labelled training set and a held-out test set, labels as 0..K-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
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
    expected = tuple(input_shape)
    got = tuple(x.shape[1:])
    if len(got) + 1 == len(expected) and expected[-1] == 1:
        x = x[..., np.newaxis]
        got = tuple(x.shape[1:])
    compatible = len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got, strict=True))
    if not compatible:
        shown = tuple(-1 if d is None else d for d in expected)
        raise DataError(f"{origin}: sample shape {got} does not fit the model input shape {shown}")
    return x.astype(np.float32, copy=False)


def require_classes(y: np.ndarray, origin: str) -> None:
    if len(np.unique(y)) < 2:
        raise DataError(f"{origin}: found {len(np.unique(y))} class; at least 2 classes are needed")


def split_dataset(x: np.ndarray, y: np.ndarray, names: tuple[str, ...],
                  test_fraction: float, seed: int, origin: str = "data") -> Dataset:
    """Stratified split that leaves every class at least one training and one held-out example.

    Transfer is judged on held-out accuracy; with no held-out example there is nothing
    to judge, so that is an error here rather than an empty evaluation later.
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
    return Dataset(x[train], y[train], x[test], y[test], names)


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


def load_npz(path: Path, input_shape: tuple[int | None, ...], test_fraction: float, seed: int) -> Dataset:
    """An .npz with arrays `x` (samples) and `y` (labels) of equal length."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DataError(f"{path}: missing array(s) {sorted(missing)}; expected 'x' and 'y'")
            x, y_raw = archive["x"], archive["y"]
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/format errors all mean "not a usable npz"
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    if len(x) != len(y_raw):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y_raw)} labels")
    if y_raw.ndim != 1:
        raise DataError(f"{path}: y must be 1-D class labels, got shape {y_raw.shape}")
    require_labels(y_raw, str(path))
    require_numeric(x, str(path))
    y, names = encode_labels(y_raw)
    require_classes(y, str(path))
    x = fit_to_input(x, input_shape, str(path))
    return split_dataset(x, y, names, test_fraction, seed, str(path))


def load_image_dir(path: Path, input_shape: tuple[int | None, ...], test_fraction: float,
                   seed: int) -> Dataset:
    """A folder with one sub-folder of images per class; images are resized to the model input."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise DataError(f"{path}: image folders need a model with (height, width, 1|3) input, "
                        f"got {tuple(input_shape)}")
    height, width, channels = input_shape
    if height is None or width is None or channels is None:
        raise DataError(f"{path}: the model input has no fixed image size {tuple(input_shape)}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{path}: found {len(class_dirs)} class folder(s); at least 2 are needed "
                        "(one sub-folder of images per class)")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{class_dir}: no images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            try:
                with Image.open(file) as opened:
                    if opened.width * opened.height > MAX_IMAGE_PIXELS:
                        raise DataError(f"{file}: {opened.width}x{opened.height} pixels is over the "
                                        f"{MAX_IMAGE_PIXELS:,}-pixel limit (a decompression bomb or a "
                                        "photo to downscale first)")
                    arr = image_to_array(opened, (width, height), channels)
            except Image.DecompressionBombError:
                raise DataError(f"{file}: image too large to decode safely (over Pillow's decompression-bomb "
                                "limit)") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{file}: not a readable image ({exc.__class__.__name__})") from None
            images.append(arr)
            labels.append(label)
    return split_dataset(np.stack(images), np.array(labels, dtype=np.int64),
                         tuple(d.name for d in class_dirs), test_fraction, seed, str(path))


HIGH_DEPTH_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def image_to_array(image: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """An image scaled to [0, 1] at `size` (width, height) with `channels` channels.

    16-bit and 32-bit greyscale images are scaled by their own range: converting them
    to 8-bit first (Pillow's "L") clips everything above 255 to white.
    """
    from PIL import Image

    if image.mode in HIGH_DEPTH_MODES or image.mode in ("I", "F"):
        raw = np.asarray(image, dtype=np.float64)
        full = HIGH_DEPTH_MODES.get(image.mode) or _full_scale(raw, image.mode)
        grey = Image.fromarray((raw / full).astype(np.float32), mode="F").resize(size)
        arr = np.clip(np.asarray(grey, dtype=np.float32), 0.0, 1.0)
        return np.repeat(arr[..., np.newaxis], channels, axis=-1)
    converted = image.convert("L" if channels == 1 else "RGB").resize(size)
    arr = np.asarray(converted, dtype=np.float32) / 255.0
    return arr.reshape(size[1], size[0], channels)


def _full_scale(raw: np.ndarray, mode: str) -> float:
    """Full-scale value of a 32-bit greyscale image: 16-bit data stored as "I" stays 16-bit."""
    if mode == "F":
        return max(1.0, float(np.nanmax(raw))) if raw.size else 1.0
    peak = float(raw.max()) if raw.size else 0.0
    return 65535.0 if peak <= 65535 else 2.0**31 - 1
