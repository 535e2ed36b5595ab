"""What a training phase, the transfer arm and the from-scratch baseline report.

Plain records, apart from the code that produces them, so `outcome_records` can
store and read them back without importing the training loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.model.scoring import Curve


@dataclass
class PhaseResult:
    epochs_run: int
    wall_s: float
    cached_below: str | None = None  # the layer whose output was computed once (see graph_cut)
    setup_s: float = 0.0  # of wall_s: computing the cached activations


@dataclass
class TransferOutcome:
    model: Any
    test_accuracy: float
    phases: dict[str, PhaseResult]
    unfrozen: list[str]
    wall_s: float
    curve: Curve | None = None
    augmentation: dict[str, Any] | None = None  # how augmentation was applied (None: it was not)
    reused: bool = False  # read from an earlier run's record (see outcome_records), not retrained


@dataclass
class BaselineOutcome:
    test_accuracy: float | None
    epochs_run: int
    wall_s: float
    skipped_reason: str | None = None
    bn_layers_recalibrated: int = 0
    examples: int = 0  # labelled examples the baseline trained on
    capped_from: int | None = None  # the labelled set's size when transfer.baseline_max_examples cut it
    accuracy_before_recalibration: float | None = None
    curve: Curve | None = None
    reused: bool = False  # read from an earlier run's record (see outcome_records), not retrained
    augmented: bool = False  # trained with the augmentation on the fly
