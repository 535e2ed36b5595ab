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


def test_channel_conversion_names_the_modes_and_the_direction():
    from pipeline.model.image_files import channel_conversion

    grey = channel_conversion({"L": 12, "RGB": 28}, 3)
    assert grey is not None and grey.count == 12 and grey.total == 40
    assert grey.line() == "12 of 40 images are grayscale (L); converted to RGB for the model's 3-channel input"
    assert grey.to_json() == {"images": 12, "of": 40, "modes": {"L": 12}, "to": "RGB", "model_channels": 3}
    mixed = channel_conversion({"L": 2, "I;16": 5, "LA": 2, "RGB": 1, "P": 3}, 3)  # palettes expand to RGB
    assert mixed is not None
    assert mixed.line() == ("9 of 13 images are grayscale (I;16: 5, L: 2, LA: 2); converted to RGB for the "
                            "model's 3-channel input")
    colour = channel_conversion({"L": 30, "RGB": 7, "RGBA": 1, "P": 2}, 1)
    assert colour is not None
    assert colour.line() == ("10 of 40 images are color (RGB: 7, P: 2, RGBA: 1); converted to grayscale (L) "
                             "for the model's 1-channel input")
    assert channel_conversion({"RGB": 40, "P": 2}, 3) is None
    assert channel_conversion({"L": 40, "I;16": 3, "1": 1}, 1) is None
    assert channel_conversion({}, 3) is None


def _folder(root, modes: dict[str, list[str]]) -> None:
    """One sub-folder per class; each image a small PNG of the given Pillow mode."""
    rng = np.random.default_rng(0)
    for label, members in modes.items():
        (root / label).mkdir(parents=True)
        for i, mode in enumerate(members):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / label / f"{i}.png")


def test_a_grey_folder_for_an_rgb_model_is_counted_from_the_headers_alone(tmp_path, monkeypatch):
    """The header pass already read every file's mode: the count opens no file again."""
    import PIL.Image

    from pipeline.model.data import image_dir_rows
    from pipeline.model.image_set import channel_conversion_of

    _folder(tmp_path, {"a": ["L", "L", "RGB", "RGB", "L"], "b": ["RGB", "L", "RGB", "RGB", "RGBA"]})
    rgb = image_dir_rows(tmp_path, (8, 8, 3), 0.4, 0)
    grey = image_dir_rows(tmp_path, (8, 8, 1), 0.4, 0)

    def no_reading(*args, **kwargs):
        raise AssertionError("the conversion count must not read the images again")

    monkeypatch.setattr(PIL.Image, "open", no_reading)
    to_rgb = channel_conversion_of(rgb.x_train, rgb.x_test)
    assert to_rgb is not None and (to_rgb.count, to_rgb.total) == (4, 10)
    assert to_rgb.line() == "4 of 10 images are grayscale (L); converted to RGB for the model's 3-channel input"
    assert rgb.x_train.mode_counts() + rgb.x_test.mode_counts() == {"L": 4, "RGB": 5, "RGBA": 1}
    to_grey = channel_conversion_of(grey.x_train, grey.x_test)
    assert to_grey is not None
    assert to_grey.line() == ("6 of 10 images are color (RGB: 5, RGBA: 1); converted to grayscale (L) for the "
                              "model's 1-channel input")
    assert channel_conversion_of(rgb.x_train) is not None and channel_conversion_of(rgb.x_train).total == len(rgb.x_train)
    assert channel_conversion_of(np.zeros((3, 8, 8, 3))) is None  # arrays: shapes were checked, nothing converted
    assert channel_conversion_of(_rows([], (8, 8, 3), native=False)) is None  # rows without header kinds


def test_a_folder_in_the_models_own_mode_converts_nothing(tmp_path):
    from pipeline.model.data import image_dir_rows
    from pipeline.model.image_set import channel_conversion_of

    _folder(tmp_path, {"a": ["RGB", "RGB"], "b": ["RGB", "P"]})
    data = image_dir_rows(tmp_path, (8, 8, 3), 0.5, 0)
    assert channel_conversion_of(data.x_train, data.x_test) is None
