"""Tiny SavedModels shaped like the export stage's output: signature
`serving_default`, input `inputs` float32 [-1, 8, 8, 1], output `probabilities`
float32 [-1, 5], plus assets.extra/tf_serving_warmup_requests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

INPUT = "inputs"
OUTPUT = "probabilities"
SHAPE = (8, 8, 1)
CLASSES = 5
SLOW_INPUT = "seconds"
SLOW_OUTPUT = "echo"


class _Export(tf.Module):
    def __init__(self, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(size=(64, CLASSES)).astype(np.float32))
        self.b = tf.Variable(rng.normal(size=(CLASSES,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32, name=INPUT)])
    def serve(self, inputs):
        flat = tf.reshape(inputs, [-1, 64])
        return {OUTPUT: tf.nn.softmax(tf.matmul(flat, self.w) + self.b)}


class _Slow(tf.Module):
    """Busy-waits max(seconds) of wall time (tf.timestamp), then echoes `seconds`."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=SLOW_INPUT)])
    def serve(self, seconds):
        wait = tf.cast(tf.reduce_max(tf.concat([seconds, [0.0]], 0)), tf.float64)
        start = tf.timestamp()
        spins = tf.while_loop(lambda i: tf.timestamp() - start < wait, lambda i: i + 1,
                              [tf.constant(0, tf.int64)])[0]
        return {SLOW_OUTPUT: seconds + tf.cast(spins * 0, tf.float32)}


def predict_request(name: str, x: np.ndarray | None = None, *, version: int | None = None,
                    label: str | None = None, signature: str = "", alias: str = INPUT
                    ) -> predict_pb2.PredictRequest:
    """A Predict request built with the official classes (by version, label or latest)."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    if signature:
        req.model_spec.signature_name = signature
    if x is not None:
        req.inputs[alias].CopyFrom(tf.make_tensor_proto(x))
    return req


def warmup_request(model_name: str, rows: int = 2) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                   signature_name="serving_default"))
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((rows, *SHAPE), np.float32)))
    return req


def write_model(base: str | Path, name: str, version: int, seed: int | None = None,
                warmup: bool = True, warmup_request_override: predict_pb2.PredictRequest | None = None) -> Path:
    """Write <base>/<name>/<version>/ atomically (temp dir, then rename) like a real export."""
    final = Path(base) / name / str(version)
    tmp = Path(base) / name / f".tmp-{version}"
    module = _Export(seed if seed is not None else version)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return _finish(tmp, final, name, warmup, warmup_request_override)


def write_slow_model(base: str | Path, name: str, version: int) -> Path:
    """A model whose predict takes as long as its input says (seconds, per batch: the max)."""
    final = Path(base) / name / str(version)
    tmp = Path(base) / name / f".tmp-{version}"
    module = _Slow()
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    return _finish(tmp, final, name, False, None)


def _finish(tmp: Path, final: Path, name: str, warmup: bool, override) -> Path:
    if warmup:
        extra = tmp / "assets.extra"
        extra.mkdir(parents=True, exist_ok=True)
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=override or warmup_request(name)))
        with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as w:
            w.write(log.SerializeToString())
    os.rename(tmp, final)
    return final


def write_broken(base: str | Path, name: str, version: int) -> Path:
    """A version directory whose saved_model.pb is garbage: its load must fail."""
    final = Path(base) / name / str(version)
    final.mkdir(parents=True)
    (final / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return final


def reference_predict(version_dir: str | Path, x: np.ndarray) -> np.ndarray:
    """The local SavedModel's own output (the parity reference)."""
    loaded = tf.saved_model.load(str(version_dir))
    return loaded.signatures["serving_default"](inputs=tf.constant(x))[OUTPUT].numpy()
