"""Suite-wide settings: quiet TensorFlow, deterministic CPU execution."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as `tfrollout` (pipeline/entry.py) and the server run TF

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_source_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickly trained demo source model (digits 0-4), shared by the whole session."""
    from pipeline.model.demo import train_source_model
    from pipeline.progress import Reporter

    path = tmp_path_factory.mktemp("demo") / "source_model.keras"
    train_source_model(path, epochs=4, seed=0, reporter=Reporter(quiet=True))
    return path
