"""Augmentation settings and augmented copies: the training stream changes, nothing else does."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import AugmentConfig, build_config
from pipeline.errors import ConfigError
from pipeline.model import augment
from pipeline.model.data import image_dir_rows, materialized

SHIFT = AugmentConfig(translation=0.25, rotation=0.1, fill="constant")


def _strokes(n: int = 6) -> np.ndarray:
    """8x8 images with a bright bar at a different place in each: a shift or turn moves it."""
    x = np.zeros((n, 8, 8, 1), np.float32)
    for i in range(n):
        x[i, 1:7, i % 6 + 1, 0] = 1.0
    return x


def test_augmentation_is_off_by_default_and_set_by_dotted_keys():
    assert not AugmentConfig().enabled
    cfg = build_config(assignments=["transfer.augment.rotation=0.1", "transfer.augment_copies=4"])
    assert cfg.transfer.augment.enabled and cfg.transfer.augment.rotation == 0.1
    assert augment.describe(cfg.transfer.augment) == {"rotation": 0.1, "fill": "reflect"}
    with pytest.raises(ConfigError, match="transfer.augment.rotate"):
        build_config(assignments=["transfer.augment.rotate=0.1"])
    with pytest.raises(ConfigError, match="transfer.augment.zoom"):
        build_config(assignments=["transfer.augment.zoom=1.5"])


def test_copies_follow_the_originals_and_are_the_same_for_a_seed():
    x = _strokes()
    out = augment.with_copies(x, SHIFT, 3, seed=0)
    assert out.shape == (4 * len(x), 8, 8, 1) and out.dtype == x.dtype
    np.testing.assert_array_equal(out[:len(x)], x)
    copies = out[len(x):].reshape(3, *x.shape)
    assert all(not np.allclose(copy, x) for copy in copies)  # every copy changed the images
    assert not np.allclose(copies[0], copies[1])  # and each copy differently
    np.testing.assert_array_equal(augment.with_copies(x, SHIFT, 3, seed=0), out)
    assert not np.allclose(augment.with_copies(x, SHIFT, 3, seed=1)[len(x):], out[len(x):])


def test_contrast_stays_in_the_training_pixels_range():
    ramp = np.linspace(0.25, 0.75, 64, dtype=np.float32).reshape(1, 8, 8, 1)
    x = np.concatenate([ramp, ramp[:, ::-1]] * 3)  # pixels in [0.25, 0.75], not only its ends
    out = augment.with_copies(x, AugmentConfig(contrast=0.9), 4, seed=0)
    assert augment.pixel_range(x) == (0.25, 0.75)
    assert out.min() >= 0.25 - 1e-6 and out.max() <= 0.75 + 1e-6
    assert not np.allclose(out[len(x):], np.tile(x, (4, 1, 1, 1)))


def test_lazy_copies_stream_originals_then_copies_and_key_on_their_settings(tmp_path: Path):
    for i, image in enumerate(_strokes(8)):
        folder = tmp_path / f"c{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    rows = image_dir_rows(tmp_path, (8, 8, 1), 0.25, 0).x_train
    pixels = materialized(image_dir_rows(tmp_path, (8, 8, 1), 0.25, 0), None, "images").x_train
    lazy = augment.with_copies(rows, SHIFT, 2, seed=0)
    assert isinstance(lazy, augment.AugmentedCopies) and len(lazy) == 3 * len(rows)
    streamed = np.concatenate(list(lazy.batches(4)))
    np.testing.assert_allclose(streamed, augment.with_copies(pixels, SHIFT, 2, seed=0), atol=1e-6)
    keys = {lazy.fingerprint(), augment.with_copies(rows, SHIFT, 2, seed=0).fingerprint()}
    assert len(keys) == 1  # same rows and settings: the same cache key
    changed = [augment.with_copies(rows, SHIFT.model_copy(update={"rotation": 0.2}), 2, 0),
               augment.with_copies(rows, SHIFT, 3, 0), augment.with_copies(rows, SHIFT, 2, 1),
               augment.with_copies(rows[:-1], SHIFT, 2, 0)]
    assert len({c.fingerprint() for c in changed} | keys) == 5
