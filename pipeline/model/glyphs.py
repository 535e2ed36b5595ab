"""The demo's source domain: glyphs rendered from the fonts
matplotlib ships (mpl-data/fonts/ttf), augmented, and reduced to 8x8 the way the UCI
handwritten digits behind scikit-learn's `load_digits` were made (a 32x32 bitmap, each
4x4 block's count of set pixels, 0..16) — printed characters as the source, real
handwriting as the target. No download: fonts and Pillow come with the installed packages.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

DIGITS = string.digits
LETTERS = string.ascii_uppercase + string.ascii_lowercase
# Text fonts only: symbol/extension fonts (cmex, cmsy, STIX size variants, LastResort) have no digits.
FONT_NAMES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)


def font_paths() -> list[Path]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [root / name for name in FONT_NAMES if (root / name).is_file()]


def _master(font: Path, char: str, size: int = 64) -> np.ndarray | None:
    """The glyph as a tight uint8 mask (255 = ink), or None if the font draws nothing."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size)
    canvas = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(canvas).text((size, size // 2), char, fill=255, font=face)
    arr = np.asarray(canvas)
    rows, cols = np.flatnonzero(arr.max(axis=1) > 64), np.flatnonzero(arr.max(axis=0) > 64)
    if len(rows) < 4 or len(cols) < 1:
        return None
    return arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _augment(master: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 sample in [0, 1]: rotate, rescale (size-normalised like the UCI bitmaps, with
    jitter), shift, thicken/thin the strokes, binarise, 4x4 block counts, a little noise."""
    from PIL import Image, ImageFilter

    img = Image.fromarray(master).rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, expand=True)
    h, w = img.height, img.width
    target_h = rng.uniform(26, 32)  # the UCI bitmaps are size-normalised to fill the box's height
    scale = target_h / h
    new_w = max(1, min(32, int(round(w * scale * rng.uniform(0.75, 1.25)))))
    new_h = max(1, min(32, int(round(target_h))))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    stroke = int(rng.integers(0, 4))  # pen strokes are thicker than printed ones: 0 as is, 1-2 x3, 3 x5
    if stroke:
        img = img.filter(ImageFilter.MaxFilter(3 if stroke < 3 else 5))
    canvas = np.zeros((32, 32), dtype=np.uint8)
    top = int(np.clip((32 - new_h) // 2 + rng.integers(-2, 3), 0, 32 - new_h))  # centred, jittered
    left = int(np.clip((32 - new_w) // 2 + rng.integers(-3, 4), 0, 32 - new_w))
    canvas[top:top + new_h, left:left + new_w] = np.asarray(img)
    bits = (canvas > 110).astype(np.float32)
    cells = bits.reshape(8, 4, 8, 4).sum(axis=(1, 3)) / 16.0
    cells += rng.normal(0.0, 0.03, cells.shape)
    return np.clip(cells, 0.0, 1.0).astype(np.float32)


def glyph_domain(chars: str, per_glyph: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(x (N, 8, 8, 1) float32 in [0, 1], y int64 0..len(chars)-1, class names): every character
    in every font, `per_glyph` augmented copies each."""
    rng = np.random.default_rng(seed)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for font in font_paths():
        for label, char in enumerate(chars):
            master = _master(font, char)
            if master is None:
                continue
            for _ in range(per_glyph):
                xs.append(_augment(master, rng))
                ys.append(label)
    x = np.stack(xs)[..., np.newaxis]
    return x, np.asarray(ys, dtype=np.int64), tuple(chars)
