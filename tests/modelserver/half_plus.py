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
