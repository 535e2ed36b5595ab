"""The `data.preprocess` mapping as a Keras layer in front of the exported model."""

from __future__ import annotations

from typing import Any

import keras

from pipeline.model.preprocess import apply, resolve


@keras.saving.register_keras_serializable(package="tfrollout")
class PixelPreprocess(keras.layers.Layer):
    """The `data.preprocess` mapping as the first layer of the exported model."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = resolve(mode)

    def call(self, inputs: Any) -> Any:
        return apply(keras.ops.cast(inputs, "float32"), self.mode, keras.ops)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def with_preprocess(model: Any, mode: str) -> Any:
    """raw pixels -> PixelPreprocess -> model (the model's weights are shared, not copied)."""
    inputs = keras.Input(tuple(model.input_shape[1:]), name="pixels")
    outputs = model(PixelPreprocess(mode, name="preprocess")(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_with_preprocess")
