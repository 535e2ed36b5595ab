"""The from-scratch baseline's result, kept so a re-run on the same data does not retrain it.

The baseline depends on the architecture (not the source weights: it starts from
fresh ones), the labelled and held-out rows, every transfer setting and the library
versions. Under a key hashed from all of these, its outcome is stored as JSON in the
feature cache folder; a re-run with the same key reads the number instead of paying
for the training again, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.model.training import BaselineOutcome, Curve

RECORD_FORMAT = 1


def baseline_key(architecture: str, cut_layer: str | None, data_fingerprints: list[str],
                 settings: dict[str, Any], versions: dict[str, str]) -> str:
    """A hash of everything the baseline's number depends on — pure."""
    parts = {"format": RECORD_FORMAT, "architecture": architecture, "cut": cut_layer,
             "data": data_fingerprints, "settings": settings, "versions": versions}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def to_json(outcome: BaselineOutcome) -> dict[str, Any]:
    record = asdict(outcome)
    record["curve"] = None if outcome.curve is None else {"t0": 0.0, "points": outcome.curve.to_json()}
    return record


def from_json(record: dict[str, Any]) -> BaselineOutcome:
    fields = dict(record)
    curve = fields.pop("curve", None)
    outcome = BaselineOutcome(**fields)
    if curve is not None:
        outcome.curve = Curve(0.0, [(int(e), float(w), float(a)) for e, w, a in curve["points"]])
    return outcome


def load(path: Path) -> BaselineOutcome | None:
    """The stored outcome, or None when absent or unreadable (then it is trained again)."""
    try:
        return from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save(path: Path, outcome: BaselineOutcome) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(to_json(outcome)))
    os.replace(partial, path)
