"""Inputs as the source model expects them, with the mapping baked into the model.

A model pretrained with `keras.applications` expects its family's preprocessing
(ResNet50: BGR with the ImageNet means subtracted; MobileNetV2: [-1, 1]; ...);
feeding it [0, 1] pixels silently wastes the pretraining. With `data.preprocess`
set, the pipeline trains on the mapped pixels and puts the same mapping in front
of the exported model as a layer, so the signature takes raw pixels (0-255) and
clients never re-implement it. `none` keeps the loaders' scale end to end.
The Keras layer lives in `preprocess_layer`, and the names (`pipeline.preprocess_modes`)
below the model layer, so config validation imports neither TensorFlow nor numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.preprocess_modes import CHOICES, FAMILIES, MODES, resolve

__all__ = ["CHOICES", "FAMILIES", "MODES", "apply", "needs_rgb", "raw_pixels", "resolve"]

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def needs_rgb(mode: str) -> bool:
    return mode in ("caffe", "torch")


def apply(x: Any, mode: str, ops: Any = np) -> Any:
    """Map raw pixels (0-255, channels last, RGB) to the model's input scale.

    `ops` is numpy (training data) or keras.ops (the layer): one formula for both,
    so what the model was trained on is exactly what the exported signature computes.
    """
    if mode in ("none", "raw"):
        return x
    if mode == "unit":
        return x / 255.0
    if mode == "symmetric":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return ops.flip(x, axis=-1) - np.asarray(CAFFE_BGR_MEAN, np.float32)
    if mode == "torch":
        mean, std = np.asarray(TORCH_MEAN, np.float32), np.asarray(TORCH_STD, np.float32)
        return (x / 255.0 - mean) / std
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def raw_pixels(x: np.ndarray, source: str) -> np.ndarray:
    """Loader output as raw 0-255 pixels: image folders and the demo load to [0, 1];
    an .npz is taken as holding raw pixels already."""
    return x if source == "npz" else x * np.float32(255.0)
