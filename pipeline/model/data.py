"""Target-domain data: the offline digits demo, a folder of images, or an .npz.

Loading is separate from training so that a bad data set is reported before any
model work starts, with a message naming the file or folder at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEMO_SOURCE_DIGITS = (0, 1, 2, 3, 4)
DEMO_TARGET_DIGITS = (5, 6, 7, 8, 9)


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
                  test_fraction: float, seed: int) -> Dataset:
    train, test = stratified_split(y, test_fraction, seed)
    return Dataset(x[train], y[train], x[test], y[test], names)


# --------------------------------------------------------------------------- sources


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (ships with the package: no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., np.newaxis]
    return x, digits.target.astype(np.int64)


def demo_source_domain(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Digits 0-4 with all labels: what the demo source model is trained on."""
    x, y = load_digits_arrays()
    keep = np.isin(y, DEMO_SOURCE_DIGITS)
    return split_dataset(x[keep], y[keep], tuple(str(d) for d in DEMO_SOURCE_DIGITS), test_fraction, seed)


def demo_target_domain(labels_per_class: int, test_fraction: float, seed: int) -> Dataset:
    """Digits 5-9 relabelled 0-4: a few labelled examples per class, the rest held out."""
    x, y = load_digits_arrays()
    keep = np.isin(y, DEMO_TARGET_DIGITS)
    x, y = x[keep], y[keep] - min(DEMO_TARGET_DIGITS)
    pool, test = stratified_split(y, test_fraction, seed)
    labelled = pool[few_shot_indices(y[pool], labels_per_class, seed)]
    return Dataset(x[labelled], y[labelled], x[test], y[test], tuple(str(d) for d in DEMO_TARGET_DIGITS))


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
    y, names = encode_labels(y_raw)
    require_classes(y, str(path))
    x = fit_to_input(x, input_shape, str(path))
    return split_dataset(x, y, names, test_fraction, seed)


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
                    img = opened.convert("L" if channels == 1 else "RGB").resize((width, height))
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{file}: not a readable image ({exc.__class__.__name__})") from None
            images.append(arr.reshape(height, width, channels))
            labels.append(label)
    return split_dataset(np.stack(images), np.array(labels, dtype=np.int64),
                         tuple(d.name for d in class_dirs), test_fraction, seed)
