"""Smaller exports: float16 weight storage or Keras 3's int8 quantization.

- `float16`: every float32 weight is *stored* as float16 (half the bytes) and cast
  back to float32 inside the serving function; all compute stays float32, so CPU
  speed is unchanged and the only loss is float16 rounding of the weights.
- `int8`: `model.quantize("int8")` on a copy: Dense / EinsumDense / Embedding
  kernels become int8 with per-channel scales (inputs quantized on the fly);
  Conv2D, BatchNorm and everything else stay float32 (Keras has no int8 for them).

Each mode has a Keras *reference* model that computes exactly what the exported
SavedModel computes, so the export's parity check stays strict (1e-5) and the
accuracy cost is measured on that reference, never assumed.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

MODES = ("none", "float16", "int8")


def leaf_layers(model: Any) -> list[Any]:
    """Every non-container layer, nested models included."""
    out: list[Any] = []
    for layer in model.layers:
        out.extend(leaf_layers(layer) if hasattr(layer, "layers") and layer.layers else [layer])
    return out


def reference_model(model: Any, mode: str) -> tuple[Any, list[str]]:
    """(the Keras model the SavedModel will match, names of the layers the mode changes)."""
    if mode == "none":
        return model, []
    clone = keras.models.clone_model(model)
    weights = model.get_weights()
    if mode == "float16":  # the values the float16 copies hold, back in float32
        clone.set_weights([w.astype(np.float16).astype(np.float32) if w.dtype == np.float32 else w
                           for w in weights])
        touched = [layer.name for layer in leaf_layers(clone)
                   if any(w.dtype == "float32" for w in layer.weights)]
        return clone, touched
    if mode == "int8":
        clone.set_weights(weights)
        with warnings.catch_warnings():  # "Layer Conv2D does not have a `quantize` method": expected
            warnings.simplefilter("ignore", UserWarning)
            clone.quantize("int8")
        touched = [layer.name for layer in leaf_layers(clone)
                   if str(getattr(layer.dtype_policy, "name", "")).startswith("int8")]
        return clone, touched
    raise ValueError(f"unknown quantization {mode!r}; choose one of {', '.join(MODES)}")


class _Float16Weights(tf.Module):
    """The model's variables as float16 copies (int variables as they are)."""

    def __init__(self, model: Any) -> None:
        super().__init__()

        def half(v: Any) -> tf.Variable:
            value = v.value
            return tf.Variable(tf.cast(value, tf.float16) if v.dtype == "float32" else value, trainable=False)

        self.trainable_f16 = [half(v) for v in model.trainable_variables]
        self.non_trainable_f16 = [half(v) for v in model.non_trainable_variables]


def _as_float32(variables: list[tf.Variable]) -> list[tf.Tensor]:
    return [tf.cast(v, tf.float32) if v.dtype == tf.float16 else tf.convert_to_tensor(v) for v in variables]


def write_float16_saved_model(model: Any, path: Path, input_name: str, output_name: str,
                              signature_name: str) -> None:
    """`serving_default` computing `model` with float16-stored weights cast to float32.

    `stateless_call` runs the model on the given values instead of its own variables,
    so only the float16 copies are captured and saved."""
    module = _Float16Weights(model)
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=input_name)

    @tf.function(input_signature=[spec])
    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs, _ = model.stateless_call(_as_float32(module.trainable_f16),
                                          _as_float32(module.non_trainable_f16), inputs, training=False)
        return {output_name: outputs}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={signature_name: serve})


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def signature_latency_ms(signature: Any, input_name: str, x: np.ndarray, batch: int,
                         repeats: int = 30) -> float:
    """Median in-process latency of one call with `batch` rows (rows repeat when x is short)."""
    rows = np.resize(x, (batch, *x.shape[1:])).astype(np.float32)
    tensor = tf.constant(rows)
    signature(**{input_name: tensor})  # first call traces
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        signature(**{input_name: tensor})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def accuracy_of(predict: Any, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    """Top-1 accuracy of `predict(batch) -> probabilities`, in bounded batches."""
    if len(x) == 0:
        return float("nan")
    hits = 0
    for start in range(0, len(x), batch):
        probs = np.asarray(predict(x[start:start + batch]))
        hits += int(np.sum(np.argmax(probs, axis=-1) == y[start:start + batch]))
    return hits / len(x)
