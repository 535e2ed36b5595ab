"""Lazy image rows: TensorFlow's decoder and Pillow's give the same pixels, in any scale."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.model.image_files import check_image_header
from pipeline.model.image_set import ImageSet


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def _rows(items: list[bytes], shape: tuple[int, int, int], native: bool) -> ImageSet:
    kinds = [check_image_header(item, f"item{i}") for i, item in enumerate(items)] if native else None
    return ImageSet(items, [f"item{i}" for i in range(len(items))], np.arange(len(items)), shape, kinds=kinds)


def _photos(count: int, size: int, channels: int) -> list[np.ndarray]:
    """Smooth gradients plus texture: what JPEG is made for, unlike white noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    out = []
    for _ in range(count):
        base = (ramp[None, :] * rng.uniform(0.2, 1.0) + ramp[:, None] * rng.uniform(0.0, 0.5)) / 1.5
        image = np.stack([base * rng.uniform(0.3, 1.0) for _ in range(channels)], axis=-1)
        image += rng.normal(0, 6, image.shape)
        out.append(np.clip(image, 0, 255).astype(np.uint8).squeeze())
    return out


@pytest.mark.parametrize(("fmt", "channels", "size", "max_levels", "mean_levels"), [
    ("PNG", 1, 16, 0, 0.0),   # lossless, no resize: identical
    ("PNG", 3, 16, 0, 0.0),
    ("PNG", 3, 40, 4, 0.6),   # shrunk 40 -> 16: two bicubic implementations, rounded to 8 bits
    ("JPEG", 3, 16, 3, 0.5),  # two builds of the JPEG library
])
def test_tensorflow_decoder_matches_pillow(fmt, channels, size, max_levels, mean_levels):
    items = [_encoded(p, fmt) for p in _photos(6, size, channels)]
    shape = (16, 16, channels)
    fast, slow = _rows(items, shape, native=True), _rows(items, shape, native=False)
    assert fast.native().all() and not slow.native().any()
    a, b = fast.materialize(), slow.materialize()
    diff = np.abs(a - b) * 255
    assert diff.max() <= max_levels + 1e-3 and diff.mean() <= mean_levels + 1e-6, (diff.max(), diff.mean())
    for mode in ("caffe", "symmetric") if channels == 3 else ("symmetric",):  # one formula on either path
        mapped_fast, mapped_slow = fast.with_mode(mode).materialize(), slow.with_mode(mode).materialize()
        np.testing.assert_allclose(mapped_fast, mapped_slow, atol=(max_levels + 1e-3) * (2 / 255 if mode == "symmetric" else 1))


def test_channel_conversions_and_other_formats_stay_with_pillow():
    grey = _encoded(_photos(1, 16, 1)[0], "PNG")
    rgb = _encoded(_photos(1, 16, 3)[0], "JPEG")
    tiff = io.BytesIO()
    Image.fromarray(_photos(1, 16, 3)[0]).save(tiff, format="TIFF")
    rows = _rows([grey, rgb, tiff.getvalue()], (16, 16, 3), native=True)
    assert rows.native().tolist() == [False, True, False]
    assert _rows([grey, rgb], (16, 16, 1), native=True).native().tolist() == [True, False]
    decoded = rows.materialize()
    assert decoded.shape == (3, 16, 16, 3) and np.isfinite(decoded).all()
    assert np.allclose(decoded[0, ..., 0], decoded[0, ..., 2])  # grey replicated into RGB
