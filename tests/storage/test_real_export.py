"""Round trip with a real SavedModel from the export stage's writer: export → push (S3) → pull."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.storage import open_store
from pipeline.storage.publish import push_version
from tests.storage.conftest import MotoServer, s3_config, tree_digests


def test_exported_saved_model_round_trips_byte_identical(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    import keras

    from pipeline.model.exporter import ExportSpec, export_model

    inputs = keras.Input((64,), name="inputs")
    hidden = keras.layers.Dense(32, activation="relu", name="features")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(hidden))
    x = np.random.default_rng(0).random((16, 64), dtype=np.float32)
    spec = ExportSpec(root=tmp_path / "exports", model_name="digits", version=None, input_name="inputs",
                      output_name="probabilities", warmup_records=4, golden_size=8, parity_atol=1e-5)
    result = export_model(model, spec, x, {"source_model": {"sha256": "test"}})
    vdir = result.version_dir
    assert (vdir / "saved_model.pb").is_file() and (vdir / "variables" / "variables.index").is_file()

    store = open_store(s3_config(moto, bucket))
    pushed = push_version(store, vdir, "digits", result.version)
    [info] = store.committed_versions("digits")
    assert info.version == result.version and info.manifest.export.get("model_name") == "digits"
    pulled = store.pull("digits", result.version, tmp_path / "pulled" / "digits" / str(result.version))
    assert tree_digests(pulled) == tree_digests(vdir) and len(tree_digests(vdir)) == pushed.files_uploaded

    import tensorflow as tf

    served = tf.saved_model.load(str(pulled)).signatures["serving_default"]
    out = next(iter(served(inputs=tf.constant(x[:2])).values())).numpy()
    np.testing.assert_allclose(out, model.predict(x[:2], verbose=0), atol=1e-5)
