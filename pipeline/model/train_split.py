"""Which labelled rows a phase fits on, and which rows validate its early stopping.

Both arms (transfer and the baseline) split the same way; the rules (few-shot data
gets no validation split, the baseline's cap keeps every class) are pure array
bookkeeping, kept apart from Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.model.data import Dataset, stratified_split


@dataclass
class Split:
    """Training rows and the early-stopping validation rows (stratified); x as arrays or lazy rows."""

    x_fit: Any
    y_fit: np.ndarray
    x_val: Any
    y_val: np.ndarray | None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def validation(self) -> tuple[Any, np.ndarray] | None:
        """(x_val, y_val) for Keras' validation_data; None without a validation split."""
        if self.x_val is None or self.y_val is None:
            return None
        return self.x_val, self.y_val


# Fewer labelled examples per class than this: no validation split. With 5 labels a class a
# 0.2 split validates on 1 example per class, and early stopping on it restored weights
# from epoch 19 of 39 that scored 0.53 held-out against 0.72 at the end (session 5's
# diagnosis); stopping on the training loss uses every label instead.
MIN_LABELS_PER_CLASS_FOR_VALIDATION = 10


def validation_split(data: Dataset, fraction: float, seed: int) -> Split:
    """Hold out `fraction` of the labelled set for early stopping, unless it is few-shot data."""
    if fraction <= 0 or len(data.y_train) < MIN_LABELS_PER_CLASS_FOR_VALIDATION * data.num_classes:
        return Split(data.x_train, data.y_train, None, None)
    fit, val = stratified_split(data.y_train, fraction, seed)
    if len(val) == 0:
        return Split(data.x_train, data.y_train, None, None)
    return Split(data.x_train[fit], data.y_train[fit], data.x_train[val], data.y_train[val])


def cap_examples(split: Split, limit: int | None, seed: int) -> tuple[Split, int | None]:
    """At most `limit` training rows, a stratified seeded subset (every class kept); the
    original count when it cut, else None. Validation rows are left as they are."""
    total = len(split.y_fit)
    if limit is None or total <= limit:
        return split, None
    keep, _ = stratified_split(split.y_fit, 1.0 - limit / total, seed)
    return Split(split.x_fit[keep], split.y_fit[keep], split.x_val, split.y_val), total
