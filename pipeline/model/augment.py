"""Training-time augmentation: Keras preprocessing layers applied to the training stream only.

Two ways to apply it, because the frozen-base feature cache and fresh random changes
every epoch exclude each other:
- on the fly (`augment_copies = 0`): a training wrapper puts the layers in front of the
  model; the base then sees new inputs every epoch, so it runs every epoch;
- cached copies (`augment_copies = K`): K augmented copies of the labelled set are made
  once (deterministic for the seed), and their frozen-base features are computed once
  and cached like the originals'.
Either way the exported model is the wrapped one, without these layers, and the
held-out and validation rows are never changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import AugmentConfig
from pipeline.progress import Reporter

# Rows augmented per call. Keras draws one transformation per row of a call, so the copies
# depend on how rows are batched: one fixed size keeps copy k the same whoever reads it.
APPLY_BATCH = 64


def describe(cfg: AugmentConfig) -> dict[str, Any]:
    """The settings that change the images (for reports and cache keys) — pure."""
    return {name: value for name, value in cfg.model_dump().items()
            if name == "fill" or value not in (0.0, "none")}


def pixel_range(x: Any) -> tuple[float, float]:
    """The value range contrast clips to: the training arrays' own, or a lazy set's scale."""
    if isinstance(x, np.ndarray):
        return (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 1.0)
    mode = getattr(x, "mode", "none")
    if mode == "none":
        return 0.0, 1.0
    from pipeline.model.preprocess import apply

    channels = int(x.row_shape[-1])
    ends = apply(np.array([[[[0.0] * channels]], [[[255.0] * channels]]], np.float32), mode)
    return float(np.min(ends)), float(np.max(ends))


def layers(cfg: AugmentConfig, value_range: tuple[float, float], seed: int) -> Any:
    """The configured Keras preprocessing layers as one model (identity outside training)."""
    import keras

    fill = {"fill_mode": cfg.fill, "fill_value": 0.0}
    chosen: list[Any] = []
    if cfg.flip != "none":
        chosen.append(keras.layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.rotation:
        chosen.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 1, **fill))
    if cfg.zoom:
        chosen.append(keras.layers.RandomZoom(cfg.zoom, seed=seed + 2, **fill))
    if cfg.translation:
        chosen.append(keras.layers.RandomTranslation(cfg.translation, cfg.translation, seed=seed + 3, **fill))
    if cfg.contrast:
        low, high = value_range
        chosen.append(keras.layers.RandomContrast(cfg.contrast, value_range=(low, high if high > low else low + 1),
                                                  seed=seed + 4))
    return keras.Sequential(chosen, name="augment")


def training_wrapper(model: Any, augmenter: Any) -> Any:
    """`model` behind `augmenter`, for model.fit only: the weights are `model`'s own, so
    training the wrapper trains `model`, which is what is scored and exported."""
    import keras

    inputs = keras.Input(tuple(model.input_shape[1:]), name="train_inputs")
    return keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_augmented")


def copy_seed(seed: int, copy: int) -> int:
    """Each copy's own seed, so copy k is the same whatever was drawn before it — pure."""
    return (seed * 1_000_003 + copy * 7_919) % 2**31


@dataclass
class AugmentedCopies:
    """The labelled rows followed by `copies` augmented copies of them, as lazy rows a
    feature pass reads batch by batch (nothing decoded or augmented is kept)."""

    rows: Any
    cfg: AugmentConfig
    copies: int
    seed: int
    value_range: tuple[float, float]

    def __len__(self) -> int:
        return len(self.rows) * (self.copies + 1)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.rows.row_shape)

    @property
    def failures(self) -> Any:
        return getattr(self.rows, "failures", [])

    def fingerprint(self) -> str:
        parts = {"rows": self.rows.fingerprint(), "augment": describe(self.cfg), "copies": self.copies,
                 "seed": self.seed, "range": self.value_range}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def batches(self, batch_size: int = APPLY_BATCH, reporter: Reporter | None = None,
                label: str = "augmented copies", tensors: bool = False) -> Iterator[Any]:
        """Batches of APPLY_BATCH rows whatever `batch_size` asks (see APPLY_BATCH)."""
        del batch_size
        yield from self.rows.batches(APPLY_BATCH, reporter=reporter, label=f"{label} (originals)", tensors=tensors)
        for copy in range(1, self.copies + 1):
            augmenter = layers(self.cfg, self.value_range, copy_seed(self.seed, copy))
            for batch in self.rows.batches(APPLY_BATCH, reporter=reporter,
                                           label=f"{label} (copy {copy}/{self.copies})", tensors=True):
                out = augmenter(batch, training=True)
                yield out if tensors else np.asarray(out)


def with_copies(x: Any, cfg: AugmentConfig, copies: int, seed: int) -> Any:
    """`x` and `copies` augmented copies of it: arrays in memory for arrays (they are
    small by construction), lazy rows for lazy rows."""
    value_range = pixel_range(x)
    if not isinstance(x, np.ndarray):
        return AugmentedCopies(x, cfg, copies, seed, value_range)
    parts = [x]
    for copy in range(1, copies + 1):
        augmenter = layers(cfg, value_range, copy_seed(seed, copy))
        parts.append(np.concatenate([np.asarray(augmenter(x[start:start + APPLY_BATCH], training=True))
                                     for start in range(0, len(x), APPLY_BATCH)]).astype(x.dtype, copy=False))
    return np.concatenate(parts)
