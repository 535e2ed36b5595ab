"""Stand-ins (written here, not TF Serving's files) for fixtures that exist upstream only as binaries.

Usage: make_standins.py TESTDATA_DIR

* good_model_config.txt: the stored copy predates the test's ``${TEST_HALF_PLUS_*_DIR}``
  placeholders, so a config with those placeholders is written instead.
* saved_model_half_plus_three/00000123: no generator is stored upstream; a TF1 graph like
  saved_model_half_plus_two.py's predict path with b=3 (y = 0.5*x + 3), the regress/classify
  signatures over serialized tf.Examples, and assets/foo.txt.
* saved_model_half_plus_two_tf2_cpu/00000123: no generator is stored upstream; a TF2
  tf.Module (tf.saved_model.save) with serving_default (x->y), regress_x_to_y,
  regress_x_to_y2 and classify_x_to_y.
"""

import os
import shutil
import sys
import tempfile

import tensorflow as tf

GOOD_MODEL_CONFIG = """model_config_list: {
  config: {
    name: "half_plus_two",
    base_path: "${TEST_HALF_PLUS_TWO_DIR}",
    model_platform: "tensorflow"
  },
  config: {
    name: "half_plus_three",
    base_path: "${TEST_HALF_PLUS_THREE_DIR}",
    model_platform: "tensorflow"
  }
}
"""


def write_half_plus_three(testdata: str) -> None:
    """TF1 SavedModelBuilder export, as the upstream binary was made."""
    tf1 = tf.compat.v1
    export = os.path.join(testdata, "saved_model_half_plus_three", "00000123")
    shutil.rmtree(os.path.dirname(export), ignore_errors=True)
    assets_src = tempfile.mkdtemp()
    asset_path = os.path.join(assets_src, "foo.txt")
    with open(asset_path, "w") as f:
        f.write("asset-file-contents")
    with tf.Graph().as_default() as g, tf1.Session(graph=g) as sess:
        a = tf1.Variable(0.5, name="a")
        b = tf1.Variable(3.0, name="b")
        ex = tf1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = tf1.parse_example(ex, {"x": tf1.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        tf1.add_to_collection(tf1.GraphKeys.ASSET_FILEPATHS, tf.constant(asset_path))
        info = tf1.saved_model.utils.build_tensor_info
        sig = tf1.saved_model.signature_def_utils.build_signature_def
        sigs = {
            "serving_default": sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "regress_x_to_y": sig(
                {"inputs": info(ex)}, {"outputs": info(y)}, "tensorflow/serving/regress"
            ),
            "classify_x_to_y": sig(
                {"inputs": info(ex)}, {"scores": info(y)}, "tensorflow/serving/classify"
            ),
        }
        sess.run(tf1.global_variables_initializer())
        builder = tf1.saved_model.builder.SavedModelBuilder(export)
        builder.add_meta_graph_and_variables(
            sess,
            ["serve"],
            signature_def_map=sigs,
            assets_collection=tf1.get_collection(tf1.GraphKeys.ASSET_FILEPATHS),
        )
        builder.save()
    shutil.rmtree(assets_src)


class HalfPlusTwo(tf.Module):
    """Object-based (TF2) half_plus_two with the four signatures the test calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)
        self.c = tf.Variable(3.0)

    def _parse(self, serialized):
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
        return tf.io.parse_example(serialized, spec)["x"]

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy(self, inputs):
        return {"outputs": self.a * self._parse(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy2(self, inputs):
        return {"outputs": self.a * self._parse(inputs) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_xy(self, inputs):
        return {"scores": self.a * self._parse(inputs) + self.b}


def write_half_plus_two_tf2(testdata: str) -> None:
    m = HalfPlusTwo()
    export = os.path.join(testdata, "saved_model_half_plus_two_tf2_cpu", "00000123")
    shutil.rmtree(os.path.dirname(export), ignore_errors=True)
    tf.saved_model.save(
        m,
        export,
        signatures={
            "serving_default": m.predict,
            "regress_x_to_y": m.regress_xy,
            "regress_x_to_y2": m.regress_xy2,
            "classify_x_to_y": m.classify_xy,
        },
    )


if __name__ == "__main__":
    testdata = sys.argv[1]
    with open(os.path.join(testdata, "good_model_config.txt"), "w") as f:
        f.write(GOOD_MODEL_CONFIG)
    write_half_plus_three(testdata)
    write_half_plus_two_tf2(testdata)
    print("stand-ins written under", testdata)
