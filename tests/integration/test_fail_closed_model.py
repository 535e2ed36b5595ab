"""A model that outputs NaN, or a training run whose loss blows up, never gets exported (real TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TransferConfig
from pipeline.errors import ExportError, TransferError
from pipeline.model.data import demo_target_domain
from pipeline.model.exporter import ExportSpec, export_model
from pipeline.model.fitting import check_finite_losses
from pipeline.model.source import load_source_model
from pipeline.progress import Reporter


def _spec(root: Path) -> ExportSpec:
    return ExportSpec(root=root, model_name="digits", version=None, input_name="inputs",
                      output_name="probabilities", warmup_records=2, golden_size=4, parity_atol=1e-5)


def test_a_model_that_outputs_nan_is_refused_and_nothing_is_left(demo_source_model, tmp_path):
    import keras

    source = load_source_model(demo_source_model, "features").model
    poisoned = keras.Model(source.inputs, keras.layers.Lambda(lambda t: t * np.float32("nan"))(source.outputs[0]))
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)
    with pytest.raises(ExportError, match=r"non-finite value\(s\).*NaN or Inf is not exported"):
        export_model(poisoned, _spec(tmp_path), x, {})
    model_dir = tmp_path / "digits"
    assert not model_dir.exists() or not any(model_dir.iterdir())  # no version, no staging dir


def test_no_heldout_inputs_is_no_parity_pass(demo_source_model, tmp_path):
    source = load_source_model(demo_source_model, "features").model
    with pytest.raises(ExportError, match="no held-out inputs"):
        export_model(source, _spec(tmp_path), np.zeros((0, 8, 8, 1), np.float32), {})


def test_exploding_learning_rate_stops_transfer_with_a_clear_error(demo_source_model):
    from pipeline.model.training import transfer

    data = demo_target_domain(labels_per_class=5, test_fraction=0.3, seed=0)
    source = load_source_model(demo_source_model, "features")
    cfg = TransferConfig(strategy="feature-extraction", head_epochs=5, learning_rate=3e38, patience=50,
                         baseline=False)
    with pytest.raises(TransferError, match="training loss became (nan|inf)"):
        transfer(source.model, "features", data, cfg, Reporter(quiet=True))


def test_finite_losses_pass_and_any_non_finite_one_fails():
    check_finite_losses([1.0, 0.5], "head")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(TransferError, match="epoch 2"):
            check_finite_losses([1.0, bad], "head")
