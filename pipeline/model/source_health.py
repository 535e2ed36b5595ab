"""Is the source model's base worth training on? Checked on a sample before training starts.

A base whose features at the cut are NaN, constant, or nearly so for the target data
gives a head nothing to learn from; left alone, the run spends its whole budget (the
baseline too) and fails only at the gate, with no hint why. Sampling a few hundred
target rows through the base costs seconds and names the likely cause: BatchNorm
moving statistics never estimated (a model trained a few steps keeps them near their
initial 0 and 1, so inference-mode outputs collapse), or the wrong `data.preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_ROWS = 128
# A feature dimension whose spread over the sample is below this (relative to the
# features' overall scale, or absolutely for all-zero features) carries no information.
DEAD_SPREAD = 1e-6
# Warn when at most this fraction of the feature dimensions vary over the sample.
FEW_ALIVE = 0.02
# BatchNorm statistics within this of their initial values (mean 0, variance 1) look unset: a
# MobileNetV2 trained 2 epochs from scratch (momentum 0.999) had moved them by at most 0.01.
UNSET_STATS = 0.05


@dataclass
class BatchNormState:
    layers: int = 0
    near_initial: int = 0  # layers whose moving mean/variance are still ≈ 0 / 1
    max_abs_mean: float = 0.0
    max_abs_variance_minus_one: float = 0.0


@dataclass
class Health:
    """What the sample showed; `error` set means: refuse to train."""

    rows: int
    dimensions: int
    alive_fraction: float  # feature dimensions that vary over the sample
    spread: float  # the largest per-dimension standard deviation
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    batchnorm: BatchNormState = field(default_factory=BatchNormState)

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "dimensions": self.dimensions, "alive_fraction": round(self.alive_fraction, 4),
                "spread": self.spread, "error": self.error, "warnings": self.warnings,
                "batchnorm": vars(self.batchnorm)}


def batchnorm_state(model: Any) -> BatchNormState:
    """How far each BatchNormalization layer's moving statistics moved from 0 / 1."""
    import keras

    state = BatchNormState()

    def walk(layer: Any) -> None:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean = np.abs(np.asarray(layer.moving_mean)).max(initial=0.0)
            variance = np.abs(np.asarray(layer.moving_variance) - 1.0).max(initial=0.0)
            state.layers += 1
            state.near_initial += int(mean <= UNSET_STATS and variance <= UNSET_STATS)
            state.max_abs_mean = max(state.max_abs_mean, float(mean))
            state.max_abs_variance_minus_one = max(state.max_abs_variance_minus_one, float(variance))
        for child in getattr(layer, "layers", []):
            walk(child)

    walk(model)
    return state


def likely_cause(bn: BatchNormState, preprocess: str) -> str:
    """The hint a collapsed base gets — pure."""
    hints = []
    if bn.near_initial:
        hints.append(f"BatchNorm moving statistics never estimated ({bn.near_initial} of {bn.layers} "
                     f"BatchNormalization layers within {UNSET_STATS} of their initial mean 0 / variance 1; "
                     f"largest |mean| {bn.max_abs_mean:.2g}, |variance - 1| {bn.max_abs_variance_minus_one:.2g}): "
                     "train the source longer, or re-estimate its statistics on its training data")
    hints.append(f"inputs in the wrong scale for this model (data.preprocess = {preprocess!r})")
    if bn.layers and not bn.near_initial:
        hints.append(f"BatchNorm statistics ({bn.layers} layers) estimated on data unlike these inputs")
    hints.append("a cut layer past a bottleneck the target data does not reach (model.cut_layer)")
    return "likely: " + "; or ".join(hints)


def assess(features: np.ndarray, bn: BatchNormState, preprocess: str, cut: str) -> Health:
    """Judge features of shape (rows, ...) — pure."""
    flat = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    rows, dims = flat.shape
    if not np.isfinite(flat).all():
        bad = int((~np.isfinite(flat)).any(axis=1).sum())
        return Health(rows, dims, 0.0, float("nan"), batchnorm=bn,
                      error=f"the source model's features at {cut} are NaN/Inf for {bad} of {rows} sampled "
                            f"target examples; {likely_cause(bn, preprocess)}")
    std = flat.std(axis=0) if rows > 1 else np.zeros(dims)
    scale = float(np.abs(flat).max(initial=0.0))
    alive = std > DEAD_SPREAD * max(scale, 1.0)
    health = Health(rows, dims, float(alive.mean()) if dims else 0.0, float(std.max(initial=0.0)), batchnorm=bn)
    if rows > 1 and not alive.any():
        health.error = (f"the source model's features at {cut} are the same for all {rows} sampled target "
                        f"examples (largest spread {health.spread:.2g}): a head cannot learn from them; "
                        f"{likely_cause(bn, preprocess)}")
    elif rows > 1 and health.alive_fraction <= FEW_ALIVE:
        health.warnings.append(f"only {int(alive.sum())} of {dims} features at {cut} vary over {rows} sampled "
                               f"target examples; {likely_cause(bn, preprocess)}")
    if health.error is None and looks_like_probabilities(flat):
        health.warnings.append(f"the features at {cut} look like class probabilities (every sampled row is "
                               f"non-negative and sums to 1): the head learns from the source's {dims} "
                               "predictions, not its features; a SavedModel needs a feature-vector signature "
                               "or output (model.signature / model.output_key), a Keras model a cut before "
                               "its classifier (model.cut_layer)")
    return health


def looks_like_probabilities(flat: np.ndarray) -> bool:
    """Rows of a softmax: ≥ 2 columns, non-negative, each summing to 1 — pure."""
    if flat.ndim != 2 or flat.shape[1] < 2 or len(flat) < 2:
        return False
    return bool((flat >= 0).all() and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))


def sample_positions(count: int, limit: int = SAMPLE_ROWS) -> np.ndarray:
    """Evenly spread rows (deterministic; the split already shuffled classes together) — pure."""
    if count <= limit:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def one_class(predictions: np.ndarray) -> int | None:
    """The class every row of a (rows, classes) output picks, if they all pick one — pure."""
    if predictions.ndim != 2 or predictions.shape[1] < 2 or len(predictions) < 2:
        return None
    picks = np.argmax(predictions, axis=-1)
    return int(picks[0]) if (picks == picks[0]).all() else None


def _outputs(model: Any, sample: Any) -> list[np.ndarray]:
    """Every output of `model` for `sample`, batch by batch through one traced function."""
    from pipeline.model.feature_cache import inference_function
    from pipeline.model.scoring import row_batches

    forward = inference_function(model)
    parts: list[list[np.ndarray]] = []
    for batch in row_batches(sample, 64):
        out = forward(np.asarray(batch, dtype=np.float32))
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


def check(source_model: Any, base: Any, x: Any, preprocess: str, cut: str) -> Health:
    """Run a sample of `x` (arrays or lazy rows) through `base` and assess the features;
    also warn when the source's own classifier puts every sampled example in one class.
    One pass: the cut's features and the source's outputs come from the same forward."""
    import keras

    sample = x[sample_positions(len(x))]
    if len(sample) == 0:
        return Health(0, 0, 0.0, 0.0, error="no target examples to check the source model on")
    both = source_model is not base and len(keras.tree.flatten(source_model.outputs)) == 1
    model = keras.Model(base.inputs, [base.output, source_model.output]) if both else base
    outputs = _outputs(model, sample)
    health = assess(outputs[0], batchnorm_state(base), preprocess, cut)
    if health.error is None and both:
        picked = one_class(outputs[1])
        if picked is not None:
            health.warnings.append(f"the source model's own classifier puts all {len(sample)} sampled target "
                                   f"examples in its class {picked}; {likely_cause(health.batchnorm, preprocess)}")
    return health
