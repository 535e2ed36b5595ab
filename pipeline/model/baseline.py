"""The comparison arm: the source's architecture with fresh weights, trained from
scratch on the same labelled rows as the transfer arm.

It shares no phase with the transfer arm, only the building blocks. BatchNorm
recalibration lives here because only a net trained from scratch needs it.
"""

from __future__ import annotations

import time
from typing import Any

import keras

from pipeline.config import TransferConfig
from pipeline.model import augment
from pipeline.model.assembly import make_head, split_base
from pipeline.model.data import Dataset
from pipeline.model.fitting import compile_model, fit_phase, trainable_form
from pipeline.model.outcomes import BaselineOutcome
from pipeline.model.saved_model_base import signature_layer
from pipeline.model.scoring import Curve, accuracy, row_batches
from pipeline.model.train_split import cap_examples, validation_split
from pipeline.progress import Reporter


def fresh_base(source_model: Any, cut_layer: str | None) -> Any:
    """The base's architecture with new random weights, every layer trainable.

    clone_model copies each layer's `trainable` flag, and the transfer run before the
    baseline froze the (shared) source layers: without this the baseline would train
    only the top layers above a frozen random base — a handicapped baseline.
    """
    base = keras.models.clone_model(split_base(source_model, cut_layer))
    for layer in [base, *base.layers]:
        layer.trainable = True
    return base


def train_from_scratch(source_model: Any, cut_layer: str | None, data: Dataset, cfg: TransferConfig,
                       reporter: Reporter) -> BaselineOutcome:
    """The same architecture with fresh weights, trained on the same labelled set (the baseline)."""
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.perf_counter()
    if signature_layer(split_base(source_model, cut_layer)) is not None:
        return BaselineOutcome(None, 0, 0.0, "a SavedModel base has no architecture to re-initialise "
                                             "(only its trained function): no from-scratch baseline")
    try:
        base = fresh_base(source_model, cut_layer)
    except Exception as exc:  # e.g. a SavedModel base cannot be re-initialised
        return BaselineOutcome(None, 0, 0.0, f"architecture cannot be cloned ({type(exc).__name__})")
    head = make_head(tuple(base.output_shape[1:]), data.num_classes, cfg.head_units)
    inputs = keras.Input(tuple(base.input_shape[1:]), name="inputs")
    model = keras.Model(inputs, head(base(inputs)), name="from_scratch")
    augmenter = None  # no frozen base to cache: the baseline augments on the fly
    if cfg.augment.enabled:
        augmenter = augment.layers(cfg.augment, augment.pixel_range(data.x_train), cfg.seed)
    trainer = trainable_form(model, augmenter)
    compile_model(trainer, cfg.learning_rate)
    split = validation_split(data, cfg.validation_fraction, cfg.seed)
    split, capped_from = cap_examples(split, cfg.baseline_max_examples, cfg.seed)
    if capped_from is not None:
        reporter.note(f"baseline: trained on {len(split.y_fit)} of {capped_from} labelled examples "
                      f"(transfer.baseline_max_examples = {cfg.baseline_max_examples}); transfer used all")
    val = split.validation
    curve = Curve(t0) if cfg.record_curves else None
    phase = fit_phase(trainer, split.x_fit, split.y_fit, val, split, cfg.scratch_epochs, cfg, reporter,
                      "baseline: same net from scratch",
                      [curve.callback(model, data.x_test, data.y_test)] if curve is not None else [])
    before = None
    recalibrated = 0
    if batchnorm_layers(model):  # inference-mode numbers need population statistics (see below)
        before = accuracy(model, data.x_test, data.y_test)
        recalibrated = recalibrate_batchnorm(model, split.x_fit)
    return BaselineOutcome(accuracy(model, data.x_test, data.y_test), phase.epochs_run,
                           time.perf_counter() - t0, bn_layers_recalibrated=recalibrated,
                           examples=int(len(split.y_fit)), capped_from=capped_from,
                           accuracy_before_recalibration=before, curve=curve, augmented=augmenter is not None)


def batchnorm_layers(model: Any) -> list[Any]:
    """Every trainable BatchNormalization layer, nested models included."""
    found: list[Any] = []

    def walk(layer: Any) -> None:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        for child in getattr(layer, "layers", []):
            walk(child)

    walk(model)
    return found


def recalibrate_batchnorm(model: Any, x: Any, batch_size: int = 64) -> int:
    """Replace BN moving statistics with the average of per-batch statistics over `x`.

    A net trained from scratch for a few dozen steps has moving averages (momentum
    0.99-0.999) still close to their initial 0/1, so its inference-mode accuracy says
    little about what it learned — chance level in a MobileNetV2 test. Running the
    training inputs forward once in training mode with momentum (i-1)/i at batch i
    leaves each moving mean/variance equal to the mean of the batch statistics: the
    same estimate Keras would converge to, reached in one pass. Weights do not change.
    """
    layers = batchnorm_layers(model)
    if not layers or len(x) == 0:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(row_batches(x, batch_size), start=1):
            for layer in layers:
                layer.momentum = (i - 1) / i
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)
