"""One training phase: compile, `model.fit` with early stopping and a progress bar,
and the check on the losses it ran with.

Shared by the transfer phases and the from-scratch baseline, so both arms stop,
report and fail the same way.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from pipeline.config import TransferConfig
from pipeline.errors import TransferError
from pipeline.model import augment
from pipeline.model.image_set import is_lazy, named_decode_errors
from pipeline.model.outcomes import PhaseResult
from pipeline.model.train_split import Split
from pipeline.progress import Advance, Reporter


class ProgressCallback(keras.callbacks.Callback):
    """Advances a progress bar once per epoch and shows the latest loss."""

    def __init__(self, advance: Advance) -> None:
        super().__init__()
        self._advance = advance

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {v:.3f}" for k, v in logs.items() if k in {"loss", "val_loss", "val_accuracy"}]
        self._advance(1, status=" ".join(parts))


def compile_model(model: Any, learning_rate: float, steps_per_execution: int = 1) -> None:
    """Adam, sparse categorical cross-entropy and accuracy: how every phase compiles."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)


def trainable_form(model: Any, augmenter: Any) -> Any:
    """What model.fit trains: `model`, or `model` behind the augmentation layers (shared weights)."""
    return model if augmenter is None else augment.training_wrapper(model, augmenter)


def check_finite_losses(losses: list[float], label: str) -> None:
    """A NaN or infinite training loss means the weights are garbage: stop with a clear error."""
    for epoch, loss in enumerate(losses, start=1):
        if not np.isfinite(loss):
            raise TransferError(f"{label}: the training loss became {loss} at epoch {epoch}; the "
                                "learning rate is probably too high (or the data holds NaN/Inf)")


def _early_stopping(split: Split, patience: int) -> keras.callbacks.EarlyStopping:
    monitor = "val_loss" if split.validation is not None else "loss"
    return keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)


def fit_arguments(x: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None, batch_size: int,
                  seed: int) -> dict[str, Any]:
    """model.fit's data arguments: arrays as they are, lazy rows as shuffled tf.data streams."""
    if not is_lazy(x):
        return {"x": x, "y": y, "validation_data": val, "batch_size": batch_size, "shuffle": True}
    if val is not None and is_lazy(val[0]):
        val = val[0].training_dataset(val[1], batch_size, seed, shuffle=False)
    return {"x": x.training_dataset(y, batch_size, seed), "validation_data": val,
            "shuffle": False}  # the stream reshuffles itself every epoch


def fit_phase(model: Any, x: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None,
              split: Split, epochs: int, cfg: TransferConfig, reporter: Reporter, label: str,
              extra: list[keras.callbacks.Callback] | None = None) -> PhaseResult:
    """`model.fit` for one phase: early stopping (best weights restored), NaN checks, progress."""
    t0 = time.perf_counter()
    with reporter.progress(label, epochs, unit="epochs") as advance, named_decode_errors(x):
        history = model.fit(**fit_arguments(x, y, val, cfg.batch_size, cfg.seed), epochs=epochs, verbose=0,
                            callbacks=[keras.callbacks.TerminateOnNaN(), _early_stopping(split, cfg.patience),
                                       ProgressCallback(advance), *(extra or [])])
        losses = history.history.get("loss", [])
        epochs_run = len(losses)
        check_finite_losses(losses, label)
        if epochs_run < epochs:
            advance(0, status=f"early stop after {epochs_run} epochs (best weights restored)")
    return PhaseResult(epochs_run, time.perf_counter() - t0)
