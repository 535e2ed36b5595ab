"""The on-disk feature cache and lazy image rows: computed once, reused by key, never half-read."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError, TransferError
from pipeline.model.data import image_dir_rows, materialized
from pipeline.model.feature_cache import FeatureCache, FeatureFile


def _folder(root: Path, per_class: int = 12) -> Path:
    """Two classes of 8x8 greyscale PNGs: dark noisy squares vs bright ones."""
    rng = np.random.default_rng(0)
    for label, level in enumerate((40, 200)):
        for i in range(per_class):
            folder = root / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(level + rng.normal(0, 25, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _model(scale: float = 1.0):
    import keras

    # named layers: Keras' automatic names count up per process, and other tests read them
    inputs = keras.Input((8, 8, 1), name="cache_test_inputs")
    x = keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=1), name="cache_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="cache_pool")(x)
    return keras.Model(inputs, keras.layers.Rescaling(scale, name="cache_scale")(x), name="cache_model")


def test_features_match_the_model_and_a_second_pass_reads_them_back(tmp_path: Path):
    data = image_dir_rows(_folder(tmp_path / "imgs"), (8, 8, 1), 0.25, 0)
    model = _model()
    expected = model.predict(materialized(data, None, "images").x_train, verbose=0)
    cache = FeatureCache(tmp_path / "cache")
    first = cache.features(model, data.x_train, "train")
    assert first.dtype == np.float16 and first.count == len(data.x_train)
    np.testing.assert_allclose(first.load(), expected, rtol=2e-3, atol=1e-3)
    written = cache.stats.bytes_written
    assert (cache.stats.hits, cache.stats.misses) == (0, 1) and written == first.nbytes > 0
    again = FeatureCache(tmp_path / "cache").features(model, data.x_train, "train")
    assert again.path == first.path and np.array_equal(again.load(), first.load())
    assert not list((tmp_path / "cache").glob(".*"))  # no partial file left behind


def test_a_changed_image_model_or_row_set_is_a_new_key(tmp_path: Path):
    folder = _folder(tmp_path / "imgs")
    data = image_dir_rows(folder, (8, 8, 1), 0.25, 0)
    cache = FeatureCache(tmp_path / "cache")
    model = _model()
    key = cache.key(model, data.x_train)
    assert cache.key(model, data.x_train) == key
    assert cache.key(model, data.x_test) != key
    assert cache.key(model, data.x_train.with_mode("symmetric")) != key
    assert cache.key(_model(scale=2.0), data.x_train) != key
    touched = folder / "c0" / "0.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1_000_000_000))
    assert cache.key(model, image_dir_rows(folder, (8, 8, 1), 0.25, 0).x_train) != key


def test_a_damaged_cache_file_is_recomputed_not_read(tmp_path: Path):
    data = image_dir_rows(_folder(tmp_path / "imgs"), (8, 8, 1), 0.25, 0)
    model = _model()
    good = FeatureCache(tmp_path / "cache").features(model, data.x_train, "train").load()
    path = tmp_path / "cache" / f"{FeatureCache(tmp_path / 'cache').key(model, data.x_train)}.npy"
    path.write_bytes(path.read_bytes()[:-10])  # a truncated file (e.g. copied half-way)
    with pytest.raises(TransferError, match="bytes, expected"):
        FeatureFile.open(path)
    cache = FeatureCache(tmp_path / "cache")
    assert np.array_equal(cache.features(model, data.x_train, "train").load(), good)
    assert cache.stats.misses == 1


def test_activations_beyond_float16_are_cached_as_float32_and_nan_is_refused(tmp_path: Path):
    data = image_dir_rows(_folder(tmp_path / "imgs"), (8, 8, 1), 0.25, 0)
    big = FeatureCache(tmp_path / "cache").features(_model(scale=1e6), data.x_train, "train")
    assert big.dtype == np.float32 and np.abs(big.load()).max() > 65504
    with pytest.raises(TransferError, match="NaN/Inf"):
        FeatureCache(tmp_path / "cache").features(_model(scale=float("nan")), data.x_train, "train")
    assert not list((tmp_path / "cache").glob(".*"))


def test_training_stream_visits_every_row_once_per_epoch_in_a_new_order(tmp_path: Path):
    data = image_dir_rows(_folder(tmp_path / "imgs", per_class=40), (8, 8, 1), 0.2, 0)
    file = FeatureCache(tmp_path / "cache").features(_model(), data.x_train, "train")
    rows = file.load()
    labels = np.arange(len(rows))  # the row number as its label: shows which row came
    stream = file.training_dataset(labels, batch_size=7, seed=3)
    epochs = [np.concatenate([y.numpy() for _, y in stream]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == labels.tolist()
    assert not np.array_equal(epochs[0], epochs[1])
    x, y = next(iter(stream))
    np.testing.assert_array_equal(x.numpy(), rows[y.numpy()])


def test_a_body_that_fails_to_decode_is_named_during_a_pass(tmp_path: Path):
    folder = _folder(tmp_path / "imgs")
    bad = folder / "c1" / "5.png"
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, pixels cut off
    data = image_dir_rows(folder, (8, 8, 1), 0.25, 0)  # the header pass accepts it
    rows = data.x_train if bad in [data.x_train.items[i] for i in data.x_train.indices] else data.x_test
    with pytest.raises(DataError, match="5.png: not a readable image"):
        FeatureCache(tmp_path / "cache").features(_model(), rows, "train")
