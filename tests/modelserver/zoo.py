"""Models for the robustness tests (issue 22): the pipeline's demo digits CNN exported
as the pipeline exports it (Keras 3, `inputs` float32 [-1, 8, 8, 1] → `probabilities`
[-1, 10]), a dense MLP (`features` float32 [-1, 16] → `scores` [-1, 3]) and a TF1
graph (SavedModelBuilder: `x` float32 [-1, 8, 8, 1] → conv2d → `y` [-1, 4])."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

CNN, DENSE, TF1 = "cnn", "dense", "tf1conv"
CNN_SHAPE = (8, 8, 1)
DENSE_WIDTH = 16


def _publish(tmp: Path, final: Path) -> Path:
    os.rename(tmp, final)
    return final


def write_cnn(base: Path, version: int = 1) -> Path:
    import keras

    from pipeline.model.demo import build_digits_cnn
    from pipeline.model.exporter import write_saved_model

    keras.utils.set_random_seed(version)
    final, tmp = base / CNN / str(version), base / CNN / f".tmp-{version}"
    write_saved_model(build_digits_cnn(10), tmp, "inputs", "probabilities")
    return _publish(tmp, final)


def write_dense(base: Path, version: int = 1) -> Path:
    import keras

    from pipeline.model.exporter import write_saved_model

    keras.utils.set_random_seed(version)
    inputs = keras.Input((DENSE_WIDTH,), name="features")
    h = keras.layers.Dense(32, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    final, tmp = base / DENSE / str(version), base / DENSE / f".tmp-{version}"
    write_saved_model(model, tmp, "features", "scores")
    return _publish(tmp, final)


def write_tf1_conv(base: Path, version: int = 1) -> Path:
    v1 = tf.compat.v1
    final, tmp = base / TF1 / str(version), base / TF1 / f".tmp-{version}"
    rng = np.random.default_rng(version)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, *CNN_SHAPE], name="x")
        k = v1.get_variable("k", initializer=rng.normal(size=(3, 3, 1, 4)).astype(np.float32))
        h = tf.nn.relu(tf.nn.conv2d(x, k, strides=1, padding="SAME"))
        y = tf.identity(tf.reduce_mean(h, axis=[1, 2]), name="y")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(str(tmp))
            sig = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    return _publish(tmp, final)
