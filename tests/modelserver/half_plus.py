"""TF Serving's quickstart models, built here: half_plus_two as a TF2 SavedModel
(input `x` float32 [-1, 1], output `y` = 0.5 x + 2) and half_plus_three as a TF1
SavedModel written with tf.compat.v1's SavedModelBuilder (y = 0.5 x + 3), which
also carries a signature with a non-serving method_name."""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

ODD_SIGNATURE = "odd_method"
ODD_METHOD = "custom/not_a_serving_method"


class _HalfPlusTwo(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 0.5 * x + 2.0}


def write_half_plus_two(base: Path, dirname: str) -> Path:
    """<base>/half_plus_two/<dirname> (dirname may be zero-padded, e.g. 00000123)."""
    final = base / "half_plus_two" / dirname
    tmp = base / "half_plus_two" / f".tmp-{dirname}"
    module = _HalfPlusTwo()
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    os.rename(tmp, final)
    return final


def write_half_plus_three_tf1(base: Path, version: int) -> Path:
    """<base>/half_plus_three/<version>: a graph + session SavedModel (no TF2 object graph)."""
    final = base / "half_plus_three" / str(version)
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        a = v1.get_variable("a", initializer=0.5)
        b = v1.get_variable("b", initializer=3.0)
        y = tf.add(a * x, b, name="y")
        info_x, info_y = v1.saved_model.utils.build_tensor_info(x), v1.saved_model.utils.build_tensor_info(y)
        predict = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": info_x}, outputs={"y": info_y}, method_name="tensorflow/serving/predict")
        odd = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": info_x}, outputs={"y": info_y}, method_name=ODD_METHOD)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(final))
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": predict, ODD_SIGNATURE: odd})
            builder.save()
    return final


# ------------------------------------------------- classify / regress models

CLASSES_SIGNATURE = "classify_x_to_classes"  # ours: TF Serving's model has no `classes` output


def write_half_plus_two_examples_tf1(base: Path, name: str = "half_plus_two_tf1", version: int = 1) -> Path:
    """TF Serving's saved_model_half_plus_two.py graph (tf.compat.v1 builder): serialized
    tf.Examples parsed for `x` (required) and `x2` (default 0), y = 0.5x + 2, y2 = 0.5x + 3,
    y3 = 0.5x2 + 3. Signatures: serving_default (predict x → y), regress_x_to_y,
    regress_x_to_y2, regress_x2_to_y3 (input tensor x2, not the examples), classify_x_to_y
    (scores = y), and CLASSES_SIGNATURE: classes ["lo", "hi"] with scores [y, -y]."""
    final = base / name / str(version)
    v1 = tf.compat.v1
    utils, sig_utils, consts = (v1.saved_model.utils, v1.saved_model.signature_def_utils,
                                v1.saved_model.signature_constants)
    graph = tf.Graph()
    with graph.as_default():
        a, b, c = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b"), v1.Variable(3.0, name="c")
        examples = v1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = v1.parse_example(examples, {
            "x": v1.FixedLenFeature([1], dtype=tf.float32),
            "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0])})
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.identity(tf.add(tf.multiply(a, x2), c), name="y3")
        classes = tf.tile(tf.constant([["lo", "hi"]]), tf.stack([tf.shape(y)[0], 1]), name="classes")
        scores2 = tf.concat([y, -y], axis=1, name="scores2")
        info = utils.build_tensor_info

        def sig(inputs, outputs, method):
            return sig_utils.build_signature_def(
                {k: info(t) for k, t in inputs.items()}, {k: info(t) for k, t in outputs.items()}, method)

        regress, classify = consts.REGRESS_METHOD_NAME, consts.CLASSIFY_METHOD_NAME
        signatures = {
            "serving_default": sig({"x": x}, {"y": y}, consts.PREDICT_METHOD_NAME),
            "regress_x_to_y": sig({"inputs": examples}, {"outputs": y}, regress),
            "regress_x_to_y2": sig({"inputs": examples}, {"outputs": y2}, regress),
            "regress_x2_to_y3": sig({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": sig({"inputs": examples}, {"scores": y}, classify),
            CLASSES_SIGNATURE: sig({"inputs": examples}, {"classes": classes, "scores": scores2}, classify),
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(final))
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return final


class _HalfPlusTwoExamples(tf.Module):
    """The TF2 (tf.saved_model.save) equivalent: every signature's method_name is
    tensorflow/serving/predict, and each signature gets its own input placeholder."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = tf.Variable(0.5), tf.Variable(2.0), tf.Variable(3.0)

    @staticmethod
    def _x(serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress(self, inputs):
        return {"outputs": self.a * self._x(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def regress2(self, inputs):
        return {"outputs": self.a * self._x(inputs) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify(self, inputs):
        return {"scores": self.a * self._x(inputs) + self.b}


def write_half_plus_two_examples_tf2(base: Path, name: str = "half_plus_two_tf2", version: int = 1) -> Path:
    """<base>/<name>/<version>: _HalfPlusTwoExamples with serving_default (x → y),
    regress_x_to_y, regress_x_to_y2 and classify_x_to_y."""
    final = base / name / str(version)
    m = _HalfPlusTwoExamples()
    tf.saved_model.save(m, str(final), signatures={
        "serving_default": m.predict, "regress_x_to_y": m.regress,
        "regress_x_to_y2": m.regress2, "classify_x_to_y": m.classify})
    return final
