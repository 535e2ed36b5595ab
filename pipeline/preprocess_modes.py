"""The names `data.preprocess` accepts, apart from the code that applies them.

The config validates `data.preprocess` when it is read; the mapping itself (numpy and
Keras) lives in `pipeline.model.preprocess`. Keeping the names here lets the config sit
below the model layer (see ARCHITECTURE.md) and stay free of numpy.
"""

from __future__ import annotations

MODES = ("none", "raw", "unit", "symmetric", "caffe", "torch")

# keras.applications families and the mode of their `preprocess_input` (facts from
# the Keras API docs). Families that rescale inside the model take raw pixels.
FAMILIES = {
    "resnet": "caffe", "resnet50": "caffe", "vgg16": "caffe", "vgg19": "caffe",
    "resnet_v2": "symmetric", "mobilenet": "symmetric", "mobilenet_v2": "symmetric",
    "inception_v3": "symmetric", "inception_resnet_v2": "symmetric", "xception": "symmetric",
    "nasnet": "symmetric",
    "densenet": "torch",
    "efficientnet": "raw", "efficientnet_v2": "raw", "convnext": "raw", "regnet": "raw",
    "mobilenet_v3": "raw",
}
CHOICES = (*MODES, *sorted(FAMILIES))


def resolve(name: str) -> str:
    """A mode from a mode or family name (ValueError for anything else)."""
    if name in MODES:
        return name
    if name in FAMILIES:
        return FAMILIES[name]
    raise ValueError(f"unknown preprocessing {name!r}; choose one of {', '.join(CHOICES)}")
