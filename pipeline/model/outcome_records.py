"""Both arms' results, kept so a re-run on the same data does not train them again.

Each arm's result depends only on what went in: the architecture (and, for the
transfer arm, the source weights), the labelled and held-out rows, the settings and
the library versions. Under a key hashed from all of these it is stored in the
feature cache folder: the baseline as JSON; the transfer arm as its trained model
plus JSON naming the model file's sha256. A re-run with the same key reads them
instead of paying for the training again, and says so; a record that does not read
back whole (or whose model file's hash differs) is trained again, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.model.digest import file_digest
from pipeline.model.outcomes import BaselineOutcome, PhaseResult, TransferOutcome
from pipeline.model.scoring import Curve

RECORD_FORMAT = 1


def outcome_key(kind: str, model: str, cut_layer: str | None, data_fingerprints: list[str],
                settings: dict[str, Any], versions: dict[str, str]) -> str:
    """A hash of everything an arm's result depends on — pure. `model` is the architecture
    (baseline: fresh weights) or the source model's fingerprint (transfer)."""
    parts = {"format": RECORD_FORMAT, "kind": kind, "model": model, "cut": cut_layer,
             "data": data_fingerprints, "settings": settings, "versions": versions}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _curve_json(curve: Curve | None) -> dict[str, Any] | None:
    return None if curve is None else {"t0": 0.0, "points": curve.to_json()}


def _curve(record: dict[str, Any] | None) -> Curve | None:
    if record is None:
        return None
    return Curve(0.0, [(int(e), float(w), float(a)) for e, w, a in record["points"]])


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)


def baseline_to_json(outcome: BaselineOutcome) -> dict[str, Any]:
    record = asdict(outcome)
    record["curve"] = _curve_json(outcome.curve)
    return record


def baseline_from_json(record: dict[str, Any]) -> BaselineOutcome:
    fields = dict(record)
    curve = fields.pop("curve", None)
    outcome = BaselineOutcome(**fields)
    outcome.curve = _curve(curve)
    return outcome


def load_baseline(path: Path) -> BaselineOutcome | None:
    """The stored outcome, or None when absent or unreadable (then it is trained again)."""
    try:
        return baseline_from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_baseline(path: Path, outcome: BaselineOutcome) -> None:
    _write_json(path, baseline_to_json(outcome))


def save_transfer(folder: Path, key: str, outcome: TransferOutcome) -> None:
    """The trained model (renamed into place), then the JSON naming its hash: a record
    whose JSON exists always has its whole model."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"transfer-{key}.keras"
    partial = folder / f".transfer-{key}.{os.getpid()}.partial.keras"
    try:
        outcome.model.save(partial)
        os.replace(partial, model_path)
    finally:
        partial.unlink(missing_ok=True)
    _write_json(folder / f"transfer-{key}.json", {
        "model_sha256": file_digest(model_path), "test_accuracy": outcome.test_accuracy,
        "phases": {name: asdict(phase) for name, phase in outcome.phases.items()},
        "unfrozen": outcome.unfrozen, "wall_s": outcome.wall_s, "curve": _curve_json(outcome.curve),
        "augmentation": outcome.augmentation})


def load_transfer(folder: Path, key: str) -> TransferOutcome | None:
    """The stored outcome with its model loaded, or None (absent, unreadable, or the model
    file is not the one the record names): then the arm is trained again."""
    import keras

    import pipeline.model.saved_model_base  # noqa: F401 - registers the SignatureFeatures layer

    model_path = folder / f"transfer-{key}.keras"
    try:
        record = json.loads((folder / f"transfer-{key}.json").read_text())
        if file_digest(model_path) != record["model_sha256"]:
            return None
        model = keras.models.load_model(model_path, compile=False)
        phases = {name: PhaseResult(**phase) for name, phase in record["phases"].items()}
        return TransferOutcome(model, float(record["test_accuracy"]), phases, list(record["unfrozen"]),
                               float(record["wall_s"]), _curve(record["curve"]), record["augmentation"],
                               reused=True)
    except Exception:  # noqa: BLE001 - any failure to read a record back means: train again
        return None
