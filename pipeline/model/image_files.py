"""Images as a list first, pixels second.

A data set is indexed (which files, which labels) and checked by its headers before
any pixel is decoded, so a bad file is named in seconds rather than after a long decode;
the train/held-out split is decided on that index, so it never depends on decode
order. Pixels are decoded later, in parallel by `tf.data`, pass by pass (image_set).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 40_000_000  # a 40 MP photo decodes to ≈120 MB; anything larger is refused unread


def image_folder_index(path: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...], list[str]]:
    """(files, labels 0..K-1, class names, each file's "FORMAT:mode") of a folder with one
    sub-folder per class.

    Every file's header is read here (cheap: no pixels), so an empty, non-image or
    oversized file is refused before decoding starts."""
    if not path.is_dir():
        raise DataError(f"data directory not found: {path}")
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{path}: found {len(class_dirs)} class folder(s); at least 2 are needed "
                        "(one sub-folder of images per class)")
    files: list[Path] = []
    labels: list[int] = []
    kinds: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise DataError(f"{class_dir}: no images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        kinds.extend(check_image_header(file, str(file)) for file in members)
        files.extend(members)
        labels.extend([label] * len(members))
    return files, np.array(labels, dtype=np.int64), tuple(d.name for d in class_dirs), kinds


def _open(source: Path | bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def check_image_header(source: Path | bytes, origin: str) -> str:
    """Refuse a file that is empty, not an image, or too large to decode — headers only.

    Returns its "FORMAT:mode" (e.g. "JPEG:RGB"): which decoder can take it (image_set)."""
    from PIL import Image, UnidentifiedImageError

    empty = len(source) == 0 if isinstance(source, bytes) else source.stat().st_size == 0
    if empty:
        raise DataError(f"{origin}: empty file (0 bytes), not an image")
    try:
        with _open(source) as opened:
            pixels = opened.width * opened.height
            if pixels > MAX_IMAGE_PIXELS:
                raise DataError(f"{origin}: {opened.width}x{opened.height} pixels is over the "
                                f"{MAX_IMAGE_PIXELS:,}-pixel limit (a decompression bomb or a "
                                "photo to downscale first)")
            return f"{opened.format}:{opened.mode}"
    except Image.DecompressionBombError:
        raise DataError(f"{origin}: image too large to decode safely (over Pillow's decompression-bomb "
                        "limit)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{origin}: not a readable image ({exc.__class__.__name__})") from None


def decode_image(source: Path | bytes, origin: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as float32 [0, 1] at `size` (width, height); one-line DataError naming `origin`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(source) as opened:
            return image_to_array(opened, size, channels)
    except Image.DecompressionBombError:
        raise DataError(f"{origin}: image too large to decode safely (over Pillow's decompression-bomb "
                        "limit)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{origin}: not a readable image ({exc.__class__.__name__})") from None


def fixed_image_shape(input_shape: tuple[int | None, ...], origin: str) -> tuple[int, int, int]:
    """(height, width, channels) of an image model input, or a DataError saying why not."""
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise DataError(f"{origin}: image data needs a model with (height, width, 1|3) input, "
                        f"got {tuple(input_shape)}")
    height, width, channels = input_shape
    if height is None or width is None or channels is None:
        raise DataError(f"{origin}: the model input has no fixed image size {tuple(input_shape)}")
    return height, width, channels


HIGH_DEPTH_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}
# Pillow modes with one colour channel (an alpha channel aside): replicated into RGB for a
# 3-channel model. Every other mode (RGB, RGBA, CMYK, YCbCr, palette P, ...) becomes "L"
# for a 1-channel model, its colour folded into one luminance value.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", *HIGH_DEPTH_MODES})


@dataclass(frozen=True)
class ChannelConversion:
    """Images whose pixel mode is not what the model takes, converted when they are decoded."""

    converted: dict[str, int]  # Pillow mode -> images of that mode that are converted
    total: int  # images in the data set
    channels: int  # the model input's channels (1 or 3)

    @property
    def count(self) -> int:
        return sum(self.converted.values())

    def line(self) -> str:
        """`12 of 40 images are grayscale (L); converted to RGB for the model's 3-channel input`."""
        modes = sorted(self.converted.items(), key=lambda item: (-item[1], item[0]))
        shown = modes[0][0] if len(modes) == 1 else ", ".join(f"{mode}: {n}" for mode, n in modes)
        what, target = ("grayscale", "RGB") if self.channels == 3 else ("color", "grayscale (L)")
        return (f"{self.count} of {self.total} images are {what} ({shown}); converted to {target} for the "
                f"model's {self.channels}-channel input")

    def to_json(self) -> dict[str, Any]:
        return {"images": self.count, "of": self.total, "modes": dict(self.converted),
                "to": "RGB" if self.channels == 3 else "L", "model_channels": self.channels}


def channel_conversion(modes: Mapping[str, int], channels: int) -> ChannelConversion | None:
    """Which of the images (counted by Pillow mode) change colour channels for a `channels`-channel
    model — grayscale into RGB, or colour into grayscale — or None when none do (pure)."""
    if channels == 3:
        converted = {mode: n for mode, n in modes.items() if n and mode in GREY_MODES}
    else:
        converted = {mode: n for mode, n in modes.items() if n and mode not in GREY_MODES}
    if not converted:
        return None
    return ChannelConversion(converted, sum(modes.values()), channels)


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
