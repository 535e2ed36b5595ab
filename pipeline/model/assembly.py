"""The models a transfer run is made of: the source cut into a base, a new head, the
two put together, and the base split again where a phase caches its frozen part.

Keras graph building only, no training: both arms and the benchmarks build the same
shapes from here.
"""

from __future__ import annotations

from typing import Any

import keras

from pipeline.model.freeze import LayerInfo


def split_base(model: Any, cut_layer: str | None) -> Any:
    """The source model up to (and including) the cut layer, as its own model."""
    if cut_layer is None:
        return model
    return keras.Model(model.inputs, model.get_layer(cut_layer).output, name="base")


def make_head(feature_shape: tuple[int, ...], num_classes: int, hidden_units: int) -> Any:
    """New classification head for the target classes."""
    layers: list[Any] = [keras.Input(feature_shape, name="features")]
    if len(feature_shape) > 1:
        layers.append(keras.layers.Flatten(name="head_flatten"))
    if hidden_units:
        layers.append(keras.layers.Dense(hidden_units, activation="relu", name="head_hidden"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="head_output"))
    return keras.Sequential(layers, name="new_head")


def assemble(base: Any, head: Any) -> Any:
    """inputs -> base (inference mode: BatchNorm keeps source statistics) -> head."""
    inputs = keras.Input(tuple(base.input_shape[1:]), name="inputs")
    outputs = head(base(inputs, training=False))
    return keras.Model(inputs, outputs, name="transferred")


def split_at(base: Any, cut: Any) -> tuple[Any, Any]:
    """(the frozen part below `cut`, the part above it) as models sharing the base's layers.
    Built the same way each time, so the bottom's cache key is the same in both phases."""
    return keras.Model(base.inputs, cut, name="frozen_bottom"), keras.Model(cut, base.output, name="trained_top")


def cut_layer_name(model: Any, tensor: Any) -> str:
    """The name of the layer of `model` that outputs `tensor` (for reports)."""
    for layer in model.layers:
        if any(out is tensor for out in keras.tree.flatten(layer.output)):
            return str(layer.name)
    return "cut"


def layer_infos(model: Any) -> list[LayerInfo]:
    return [LayerInfo(layer.name, bool(layer.weights),
                      isinstance(layer, keras.layers.BatchNormalization)) for layer in model.layers]
