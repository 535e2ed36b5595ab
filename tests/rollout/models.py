"""Tiny SavedModel versions for rollout tests (exported with the project's exporter)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL = "digits"


@dataclass(frozen=True)
class Versions:
    """Export dirs per version, the golden set each rollout is verified against, the store URI."""

    root: Path
    dirs: dict[int, Path]
    golden: dict[int, Path]
    store_uri: str


def _model(seed: int, shape: tuple[int, ...] = (8, 8, 1), shift: float = 0.0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=shape, name="inputs")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu", name="features")(x)
    out = keras.layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, out)
    if shift:
        w, b = model.get_layer("logits").get_weights()
        model.get_layer("logits").set_weights([w, b + shift])
    return model


def _export(model, root: Path, version: int, x: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """One version; with `labels`, a labelled golden set of all of `x` (the promote gate scores it)."""
    from pipeline.model.exporter import ExportSpec, export_model

    spec = ExportSpec(root=root, model_name=MODEL, version=version, input_name="inputs",
                      output_name="probabilities", warmup_records=2,
                      golden_size=16 if labels is None else len(x), parity_atol=1e-4)
    return export_model(model, spec, x, {"run_id": "test"}, heldout_y=labels).version_dir


def build_versions(root: Path) -> Versions:
    """v1, v2 good; v3 'bad': outputs shifted by 0.25 vs its golden; v4: input shape changed (9x9)."""
    from pipeline.config import StorageConfig
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version
    from pipeline.verify.golden import GOLDEN_FILE

    rng = np.random.default_rng(0)
    x8 = rng.random((32, 8, 8, 1), dtype=np.float32)
    x9 = rng.random((32, 9, 9, 1), dtype=np.float32)
    good, bad = root / "exports", root / "bad-exports"
    dirs = {1: _export(_model(1), good, 1, x8), 2: _export(_model(2), good, 2, x8),
            3: _export(_model(3), good, 3, x8)}
    golden = {v: d / GOLDEN_FILE for v, d in dirs.items()}
    bad3 = _export(_model(3, shift=0.25), bad, 3, x8)
    shutil.copy(golden[3], bad3 / GOLDEN_FILE)  # the artifact claims the good outputs
    dirs[3] = bad3
    dirs[4] = _export(_model(4, shape=(9, 9, 1)), good, 4, x9)
    golden[4] = golden[2]  # expected: a model answering 8x8 inputs like v2's golden set
    store_uri = f"file://{root / 'store'}"
    store = open_store(StorageConfig(uri=store_uri))
    for version, d in dirs.items():
        push_version(store, d, MODEL, version, create=True)
    return Versions(root, dirs, golden, store_uri)


def build_nan_stable_and_fix(root: Path) -> Versions:
    """v1 answers NaN for every input (its variables set to NaN after a good export, its
    golden set still claiming the good outputs, as a hand-edited artifact would); v2 is a
    good version whose golden set is labelled with its own top-1 (so the promote gate can
    score the canary). Both pushed to a store of their own."""
    import tensorflow as tf

    from pipeline.config import StorageConfig
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version
    from pipeline.verify.golden import GOLDEN_FILE

    x = np.random.default_rng(5).random((32, 8, 8, 1), dtype=np.float32)
    good = _model(7)
    labels = good.predict(x, verbose=0).argmax(axis=1)
    exports = root / "exports"
    source = _export(_model(6), root / "source", 1, x, labels)
    nan_dir = exports / MODEL / "1"
    loaded = tf.saved_model.load(str(source))
    serve = loaded.signatures["serving_default"]
    for var in serve.variables:
        var.assign(tf.fill(var.shape, float("nan")))
    tf.saved_model.save(loaded, str(nan_dir), signatures={"serving_default": serve})
    for extra in ("tfrollout.json", "assets.extra"):
        src = source / extra
        (shutil.copytree if src.is_dir() else shutil.copy)(src, nan_dir / extra)
    dirs = {1: nan_dir, 2: _export(good, exports, 2, x, labels)}
    store_uri = f"file://{root / 'store'}"
    store = open_store(StorageConfig(uri=store_uri))
    for version, d in dirs.items():
        push_version(store, d, MODEL, version, create=True)
    return Versions(root, dirs, {v: d / GOLDEN_FILE for v, d in dirs.items()}, store_uri)

