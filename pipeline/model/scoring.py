"""Held-out accuracy of a model: the final score, and the per-epoch curves.

Apart from the training loops because the stage's report (`time_to_accuracy`) and
the outcome records (`Curve`) read these numbers without training anything;
`row_batches` is the in-order row walk shared with BatchNorm recalibration and the
source health check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from pipeline.model.image_set import is_lazy, named_decode_errors


@dataclass
class Curve:
    """Held-out accuracy after every epoch, against the epoch count and the wall time since t0.

    The same numbers `accuracy()` reports at the end, taken along the way: they show
    how fast each arm learns (the pictures and `time_to_accuracy`).
    """

    t0: float
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, wall_s, accuracy)

    def callback(self, model: Any, x: Any, y: np.ndarray) -> keras.callbacks.Callback:
        """Records `model`'s accuracy on (x, y) after each epoch; epochs continue across phases.

        Must come after EarlyStopping in the callback list: its `restore_best_weights`
        runs at train end, and the point recorded then is the model the phase hands on
        (otherwise the next phase seems to start with a drop that is only the restore).
        """
        curve = self
        offset = self.points[-1][0] if self.points else 0

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                acc = quick_accuracy(model, x, y)
                curve.points.append((offset + epoch + 1, time.perf_counter() - curve.t0, acc))

            def on_train_end(self, logs: dict[str, float] | None = None) -> None:
                if not curve.points:
                    return
                epoch, _, last = curve.points[-1]
                acc = quick_accuracy(model, x, y)
                if acc != last:  # weights were restored: the phase ends on this model, same epoch count
                    curve.points.append((epoch, time.perf_counter() - curve.t0, acc))

        return Record()

    def to_json(self) -> list[list[float]]:
        return [[e, round(w, 4), a] for e, w, a in self.points]


def quick_accuracy(model: Any, x: Any, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy by calling the model directly: `predict()` builds a dataset and a function per
    call (≈50 ms), which dominated the per-epoch curves on small held-out sets."""
    if len(x) == 0:
        return float("nan")
    hits = start = 0
    with named_decode_errors(x):
        for batch in row_batches(x, batch_size):  # in row order: labels follow by position
            out = np.asarray(model(batch, training=False))
            hits += int(np.sum(np.argmax(out, axis=-1) == y[start:start + len(batch)]))
            start += len(batch)
    return hits / len(x)


def row_batches(x: Any, batch_size: int) -> Any:
    """`x` in row order, `batch_size` rows at a time: slices of an array, or a lazy pass."""
    if is_lazy(x):
        return x.batches(batch_size)
    return (x[start:start + batch_size] for start in range(0, len(x), batch_size))


def accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    if is_lazy(x):
        return quick_accuracy(model, x, y)
    predictions = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def time_to_accuracy(points: list[tuple[int, float, float]], target: float) -> float | None:
    """Wall seconds until held-out accuracy first reached `target` (None: never) — pure."""
    for _, wall_s, acc in points:
        if acc >= target:
            return wall_s
    return None
