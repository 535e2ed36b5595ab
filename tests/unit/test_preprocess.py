"""data.preprocess: one formula for the training data (numpy) and the exported layer,
equal to the keras.applications families' own preprocess_input."""

import keras
import numpy as np
import pytest

from pipeline.config import DataConfig
from pipeline.model.preprocess import CHOICES, MODES, apply, resolve
from pipeline.model.preprocess_layer import PixelPreprocess, with_preprocess

RAW = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3)).astype(np.float32)


@pytest.mark.parametrize("family, module", [
    ("resnet50", keras.applications.resnet50), ("vgg16", keras.applications.vgg16),
    ("mobilenet_v2", keras.applications.mobilenet_v2), ("xception", keras.applications.xception),
    ("densenet", keras.applications.densenet), ("efficientnet", keras.applications.efficientnet),
])
def test_families_match_keras_applications_preprocess_input(family, module):
    expected = module.preprocess_input(RAW.copy())
    np.testing.assert_allclose(apply(RAW, resolve(family)), expected, rtol=1e-5, atol=1e-4)
    layer = PixelPreprocess(family)
    np.testing.assert_allclose(np.asarray(layer(RAW)), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_layer_and_numpy_agree_for_every_mode(mode):
    np.testing.assert_allclose(np.asarray(PixelPreprocess(mode)(RAW)), apply(RAW, mode), rtol=1e-6, atol=1e-5)


def test_unit_and_symmetric_ranges():
    edges = np.array([0.0, 255.0], np.float32)
    assert apply(edges, "unit").tolist() == [0.0, 1.0]
    assert apply(edges, "symmetric").tolist() == [-1.0, 1.0]


def test_unknown_setting_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown preprocessing 'imagenet'; choose one of none, raw"):
        resolve("imagenet")
    with pytest.raises(ValueError, match="unknown preprocessing"):
        DataConfig(preprocess="imagenet")
    assert DataConfig(preprocess="resnet50").preprocess == "resnet50"
    assert set(MODES) <= set(CHOICES)


def test_wrapped_model_takes_raw_pixels_and_survives_saving(tmp_path):
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(inputs))
    wrapped = with_preprocess(model, "caffe")
    np.testing.assert_allclose(np.asarray(wrapped(RAW)), np.asarray(model(apply(RAW, "caffe"))), atol=1e-4)
    wrapped.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert back.get_layer("preprocess").mode == "caffe"
    np.testing.assert_allclose(np.asarray(back(RAW)), np.asarray(wrapped(RAW)), atol=1e-5)
