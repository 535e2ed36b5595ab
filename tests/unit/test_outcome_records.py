"""Stored arm results: read back whole or not at all."""

from pathlib import Path

import numpy as np

from pipeline.model import outcome_records
from pipeline.model.outcomes import PhaseResult, TransferOutcome
from pipeline.model.scoring import Curve


def _model():
    import keras

    inputs = keras.Input((4,), name="record_inputs")
    outputs = keras.layers.Dense(3, activation="softmax", name="record_dense",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=3))(inputs)
    return keras.Model(inputs, outputs, name="record_model")


def test_a_stored_transfer_arm_reads_back_and_a_changed_model_file_is_not_trusted(tmp_path: Path):
    model = _model()
    outcome = TransferOutcome(model, 0.75, {"head": PhaseResult(5, 1.5, "pool", 0.5)}, ["dense"], 2.0,
                              Curve(0.0, [(1, 0.5, 0.5), (2, 1.0, 0.75)]), {"applied": "on the fly"})
    outcome_records.save_transfer(tmp_path, "k1", outcome)
    back = outcome_records.load_transfer(tmp_path, "k1")
    assert back is not None and back.reused and back.test_accuracy == 0.75
    assert back.phases == outcome.phases and back.unfrozen == ["dense"] and back.augmentation == {"applied": "on the fly"}
    assert back.curve is not None and back.curve.points == [(1, 0.5, 0.5), (2, 1.0, 0.75)]
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(np.asarray(back.model(x)), np.asarray(model(x)))
    assert outcome_records.load_transfer(tmp_path, "other") is None
    with (tmp_path / "transfer-k1.keras").open("ab") as handle:
        handle.write(b"\0")  # not the file the record names
    assert outcome_records.load_transfer(tmp_path, "k1") is None
    assert not list(tmp_path.glob(".*"))  # no partial file left behind


def test_keys_change_with_every_input():
    base = ("transfer", "m", "pool", ["a", "b"], {"head_epochs": 3}, {"tensorflow": "2.20"})
    keys = {outcome_records.outcome_key(*base)}
    for i, other in enumerate(("baseline", "m2", "cut", ["a", "c"], {"head_epochs": 4}, {"tensorflow": "2.21"})):
        keys.add(outcome_records.outcome_key(*base[:i], other, *base[i + 1:]))  # type: ignore[arg-type]
    assert len(keys) == 7
