"""transfer + export on the digits demo with tiny epoch budgets (real TensorFlow)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TransferConfig
from pipeline.errors import ExportError
from pipeline.model.data import demo_target_domain
from pipeline.model.exporter import ExportSpec, export_model, parity
from pipeline.model.source import load_source_model
from pipeline.progress import Reporter

QUIET = Reporter(quiet=True)


@pytest.fixture(scope="module")
def data():
    return demo_target_domain(labels_per_class=5, test_fraction=0.3, seed=0)


@pytest.fixture(scope="module")
def fine_tuned(demo_source_model, data):
    from pipeline.model.training import transfer

    source = load_source_model(demo_source_model, "features")
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in source.model.layers}
    cfg = TransferConfig(head_epochs=5, fine_tune_epochs=3, unfreeze_top=1, patience=50)
    outcome = transfer(source.model, "features", data, cfg, QUIET)
    return outcome, before


def _spec(root: Path, **overrides) -> ExportSpec:
    values = dict(root=root, model_name="digits", version=None, input_name="inputs",
                  output_name="probabilities", warmup_records=4, golden_size=16, parity_atol=1e-5)
    values.update(overrides)
    return ExportSpec(**values)


def test_fine_tune_trains_only_the_unfrozen_top(fine_tuned):
    outcome, before = fine_tuned
    assert outcome.unfrozen == ["features"]
    base = outcome.model.get_layer("base")
    changed = {layer.name for layer in base.layers
               if any(not np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights(),
                                                               strict=True))}
    assert changed == {"features"}  # conv layers and BatchNorm statistics untouched
    assert set(outcome.phases) == {"head", "fine_tune"}
    assert 0.0 <= outcome.test_accuracy <= 1.0


def test_feature_extraction_keeps_base_frozen_and_beats_chance(demo_source_model, data):
    from pipeline.model.training import transfer

    source = load_source_model(demo_source_model, "features")
    weights = [w.copy() for w in source.model.get_layer("features").get_weights()]
    cfg = TransferConfig(strategy="feature-extraction", head_epochs=30)
    outcome = transfer(source.model, "features", data, cfg, QUIET)
    assert set(outcome.phases) == {"head"} and outcome.unfrozen == []
    for a, b in zip(weights, outcome.model.get_layer("base").get_layer("features").get_weights(),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert outcome.test_accuracy > 0.4  # 10 classes (5 labels each): chance is 0.1


def test_export_layout_signature_warmup_golden_manifest(fine_tuned, data, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    outcome, _ = fine_tuned
    result = export_model(outcome.model, _spec(tmp_path), data.x_test, {"source_model": {"sha256": "x"}})
    vdir = tmp_path / "digits" / "1"
    assert result.version == 1 and result.version_dir == vdir
    assert (vdir / "saved_model.pb").is_file() and (vdir / "variables").is_dir()
    assert result.max_abs_diff <= 1e-5
    raw = sum(np.asarray(w).nbytes for w in outcome.model.weights)
    stored = sum(f.stat().st_size for f in (vdir / "variables").iterdir())
    assert raw <= stored <= 1.1 * raw  # every weight stored once (was 2.0x with archive.track)

    signature = tf.saved_model.load(str(vdir)).signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["inputs"] and inputs["inputs"].shape.as_list() == [None, 8, 8, 1]
    assert list(signature.structured_outputs) == ["probabilities"]

    records = list(tf.data.TFRecordDataset(str(vdir / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 4
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert log.predict_log.request.model_spec.name == "digits"
    np.testing.assert_array_equal(tf.make_ndarray(log.predict_log.request.inputs["inputs"]),
                                  data.x_test[:1])

    with np.load(vdir / "assets.extra" / "tfrollout_golden.npz") as golden:
        x, y = golden["input.inputs"], golden["output.probabilities"]
    assert x.shape == (16, 8, 8, 1)
    np.testing.assert_allclose(signature(inputs=tf.constant(x))["probabilities"].numpy(), y, atol=1e-6)
    # The reference is computed one example per call, as verify sends it: bit-identical.
    one_by_one = np.concatenate([signature(inputs=tf.constant(x[i:i + 1]))["probabilities"].numpy()
                                 for i in range(len(x))])
    np.testing.assert_array_equal(y, one_by_one)

    manifest = json.loads((vdir / "tfrollout.json").read_text())
    assert manifest["version"] == 1 and manifest["source_model"]["sha256"] == "x"
    assert manifest["signature"]["inputs"]["inputs"] == {"dtype": "float32", "shape": [-1, 8, 8, 1]}
    assert manifest["signature"]["outputs"]["probabilities"]["shape"] == [-1, 10]  # ten digits
    assert manifest["versions"]["tensorflow"] == tf.__version__


def test_saved_model_cli_shows_documented_names(fine_tuned, data, tmp_path):
    outcome, _ = fine_tuned
    export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {})
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", str(tmp_path / "digits" / "1"), "--tag_set",
                            "serve", "--signature_def", "serving_default"],
                           capture_output=True, text=True, check=True).stdout
    assert "inputs['inputs']" in shown and "outputs['probabilities']" in shown


def test_versions_increment_and_pinned_existing_is_refused(fine_tuned, data, tmp_path):
    outcome, _ = fine_tuned
    assert export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {}).version == 1
    assert export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {}).version == 2
    assert export_model(outcome.model, _spec(tmp_path, version=7), data.x_test[:8], {}).version == 7
    before = sorted(p.name for p in (tmp_path / "digits").iterdir())
    with pytest.raises(ExportError, match="version 2 already exists"):
        export_model(outcome.model, _spec(tmp_path, version=2), data.x_test[:8], {})
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == before == ["1", "2", "7"]


def test_failed_parity_leaves_nothing_behind(fine_tuned, data, tmp_path, monkeypatch):
    import keras

    import pipeline.model.exporter as exporter

    outcome, _ = fine_tuned
    shifted = keras.Model(outcome.model.inputs,
                          keras.layers.Lambda(lambda t: t + 0.5)(outcome.model.outputs[0]))
    real_writer = exporter.write_saved_model
    # The SavedModel written is a different model: the parity check must catch it.
    monkeypatch.setattr(exporter, "write_saved_model",
                        lambda model, path, i, o: real_writer(shifted, path, i, o))
    with pytest.raises(ExportError, match=r"parity check failed: .* by 0\.5"):
        export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {})
    assert not (tmp_path / "digits").exists()


def test_disk_full_during_export_is_one_line_and_leaves_nothing(fine_tuned, data, tmp_path, monkeypatch):
    import errno

    import pipeline.model.exporter as exporter

    outcome, _ = fine_tuned

    def full_disk(path, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(exporter.np, "savez", full_disk)
    with pytest.raises(ExportError) as err:
        export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {})
    line = str(err.value)
    assert "\n" not in line and "writing version 1: No space left on device" in line
    assert "tfrollout_golden.npz" in line and "free disk space" in line
    assert not (tmp_path / "digits").exists()


def test_killed_exports_staging_dirs_are_swept(fine_tuned, data, tmp_path):
    import os
    import time

    from pipeline.model.exporter import sweep_stale_staging

    outcome, _ = fine_tuned
    model_dir = tmp_path / "digits"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = model_dir / f".staging-1-{dead.pid}-deadbeef"  # its exporter was killed
    live = model_dir / f".staging-1-{os.getppid()}-cafecafe"  # a running export elsewhere: kept
    ancient = model_dir / ".staging-3-0a1b2c3d"  # old naming, a day old
    for path in (orphan, live, ancient):
        (path / "variables").mkdir(parents=True)
    old = time.time() - 2 * 24 * 3600
    os.utime(ancient, (old, old))
    assert export_model(outcome.model, _spec(tmp_path), data.x_test[:8], {}).version == 1
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(["1", live.name])
    assert sweep_stale_staging(model_dir) == []


def test_parity_reports_shape_mismatch():
    class Sig:
        def __call__(self, **kwargs):
            import tensorflow as tf

            return {"probabilities": tf.zeros((2, 3))}

    spec = _spec(Path("."))
    with pytest.raises(ExportError, match="output shape"):
        parity(lambda x, training=False: np.zeros((2, 5), np.float32), Sig(), spec,
               np.zeros((2, 8, 8, 1), np.float32))


def test_parity_runs_in_bounded_batches_and_finds_the_worst_row():
    import tensorflow as tf

    seen: list[int] = []
    x = np.arange(10, dtype=np.float32).reshape(10, 1)

    def keras_model(batch, training=False):
        seen.append(len(batch))
        return np.asarray(batch) * 2.0

    class Sig:
        def __call__(self, **kwargs):
            batch = kwargs["inputs"].numpy()
            off = np.where(batch == 7.0, 0.25, 0.0)  # one row, in the third batch, differs
            return {"probabilities": tf.constant(batch * 2.0 + off)}

    spec = _spec(Path("."))
    assert parity(keras_model, Sig(), spec, x, batch_size=3) == 0.25
    assert seen == [3, 3, 3, 1]

    class NanSig:
        def __call__(self, **kwargs):
            batch = kwargs["inputs"].numpy() * 2.0
            batch[batch == 16.0] = np.nan
            return {"probabilities": tf.constant(batch)}

    with pytest.raises(ExportError, match=r"1 non-finite value\(s\) \(first nan at index \[8, 0\]\)"):
        parity(keras_model, NanSig(), spec, x, batch_size=3)


def test_batchnorm_statistics_are_reestimated_from_the_data():
    import keras

    from pipeline.model.baseline import batchnorm_layers, recalibrate_batchnorm

    rng = np.random.default_rng(0)
    x = (rng.normal(5.0, 3.0, size=(200, 4, 4, 2))).astype(np.float32)
    inner = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization(momentum=0.999)])
    model = keras.Sequential([keras.Input((4, 4, 2)), inner, keras.layers.Flatten(), keras.layers.Dense(2)])
    (bn,) = batchnorm_layers(model)  # found inside the nested model
    kernel = model.layers[-1].kernel.numpy().copy()
    assert np.allclose(bn.moving_mean.numpy(), 0.0)  # as a short training run leaves them
    assert recalibrate_batchnorm(model, x, batch_size=64) == 1
    per_channel = x.reshape(-1, 2)
    np.testing.assert_allclose(bn.moving_mean.numpy(), per_channel.mean(axis=0), rtol=0.02)
    np.testing.assert_allclose(bn.moving_variance.numpy(), per_channel.var(axis=0), rtol=0.1)
    assert bn.momentum == 0.999  # restored
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), kernel)  # weights untouched


def test_the_baseline_trains_every_layer_even_after_transfer_froze_the_source(demo_source_model):
    import keras

    from pipeline.model.baseline import fresh_base

    source = keras.models.load_model(demo_source_model, compile=False)
    for layer in source.layers[:-2]:
        layer.trainable = False  # what a fine-tune run leaves on the shared source layers
    base = fresh_base(source, "features")
    assert all(layer.trainable for layer in base.layers) and base.trainable
    assert len(base.trainable_weights) == len([w for w in base.weights if "moving" not in w.path])
    conv = base.get_layer("conv1").kernel.numpy()
    assert not np.array_equal(conv, source.get_layer("conv1").kernel.numpy())  # fresh weights


def test_a_capped_baseline_trains_on_the_stated_subset_and_says_so(demo_source_model, data):
    """transfer.baseline_max_examples: the from-scratch arm sees fewer labels, never silently."""
    from pipeline.model.training import train_from_scratch

    notes: list[str] = []

    class Recording(Reporter):
        def note(self, message: str) -> None:
            notes.append(message)

    source = load_source_model(demo_source_model, "features")
    cfg = TransferConfig(head_epochs=2, fine_tune_epochs=0, baseline_max_examples=20, patience=50)
    capped = train_from_scratch(source.model, "features", data, cfg, Recording(quiet=True))
    assert capped.capped_from == len(data.y_train) == 50 and 18 <= capped.examples <= 22
    assert any("baseline: trained on" in n and "of 50 labelled" in n for n in notes), notes
    assert capped.test_accuracy is not None and np.isfinite(capped.test_accuracy)
    whole = train_from_scratch(source.model, "features", data, cfg.model_copy(update={"baseline_max_examples": None}),
                               QUIET)
    assert whole.capped_from is None and whole.examples == 50


def _residual_source(num_classes: int = 5):
    """A small conv net with a residual block, so the cut has to skip over the block."""
    import keras

    inputs = keras.Input((8, 8, 1), name="inputs")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block_a")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="block_b")(y)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="top_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs)


def test_fine_tune_on_cached_activations_trains_the_same_model(data):
    """The frozen part below the first trained layer runs once; the trained layers and
    the held-out accuracy come out as when every step runs the whole base."""
    import keras

    from pipeline.model.graph_cut import frozen_cut
    from pipeline.model.training import split_base, transfer

    keras.utils.set_random_seed(0)
    source = _residual_source()
    weights = source.get_weights()
    cut = frozen_cut(split_base(source, "pool"), {"top_conv"})
    assert cut is not None and cut is source.get_layer("block_add").output  # not inside the block
    assert frozen_cut(split_base(source, "pool"), {"block_b"}) is source.get_layer("stem").output
    outcomes = {}
    for cached in (True, False):
        source.set_weights(weights)
        cfg = TransferConfig(head_epochs=3, fine_tune_epochs=4, unfreeze_top=1, patience=50,
                             cache_features=cached, record_curves=True)
        outcomes[cached] = transfer(source, "pool", data, cfg, QUIET)
        outcomes[cached].top = [w.copy() for w in source.get_layer("top_conv").get_weights()]
    fast, slow = outcomes[True], outcomes[False]
    assert fast.unfrozen == slow.unfrozen == ["top_conv"]
    assert any(not np.allclose(a, b) for a, b in zip(fast.top, weights[-4:-2], strict=True))  # it trained
    for a, b in zip(fast.top, slow.top, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert abs(fast.test_accuracy - slow.test_accuracy) <= 1 / len(data.y_test)
    assert fast.phases["fine_tune"].epochs_run == slow.phases["fine_tune"].epochs_run == 4
    assert fast.phases["fine_tune"].cached_below == "block_add" and slow.phases["fine_tune"].cached_below is None
    assert len(fast.curve.points) == len(slow.curve.points) == 7  # curves cover both phases either way


def _as_png_rows(data):
    """The demo split as lazy rows: each image PNG-encoded in memory, the same split."""
    import io

    from PIL import Image

    from pipeline.model.data import Dataset
    from pipeline.model.image_set import ImageSet

    encoded = []
    for image in np.concatenate([data.x_train, data.x_test]):
        png = io.BytesIO()
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(png, format="PNG")
        encoded.append(png.getvalue())
    rows = ImageSet(encoded, [f"row{i}" for i in range(len(encoded))], np.arange(len(encoded)), (8, 8, 1))
    n = len(data.y_train)
    return Dataset(rows[np.arange(n)], data.y_train, rows[np.arange(n, len(encoded))], data.y_test,
                   data.class_names)


def test_lazy_rows_train_through_the_feature_cache_like_arrays(data, tmp_path, monkeypatch):
    """Image rows decoded pass by pass, features streamed back from the on-disk cache (float16,
    never loaded whole: the in-memory limit is 0 here): the fine-tuned model matches the one
    trained on the same pixels in memory, the reported held-out accuracy (scored on cached
    features) is the assembled model's own, and a re-run reads every pass back."""
    import keras

    from pipeline.model import feature_cache
    from pipeline.model.data import materialized
    from pipeline.model.feature_cache import FeatureCache
    from pipeline.model.training import accuracy, transfer

    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)

    lazy = _as_png_rows(data)
    arrays = materialized(lazy, None, "images")
    source = _residual_source()
    weights = source.get_weights()
    cfg = TransferConfig(head_epochs=8, fine_tune_epochs=4, unfreeze_top=1, patience=50, batch_size=64,
                         learning_rate=0.01, record_curves=False)  # one full batch: order-free
    outcomes = {}
    for name, rows in (("arrays", arrays), ("lazy", lazy)):
        keras.utils.set_random_seed(0)
        source.set_weights(weights)
        cache = FeatureCache(tmp_path / "cache") if name == "lazy" else None
        outcomes[name] = transfer(source, "pool", rows, cfg, QUIET, cache)
        outcomes[name].top = [w.copy() for w in source.get_layer("top_conv").get_weights()]
        if cache is not None:
            # images through the bottom once per split (train, held-out); the head's features are the
            # top over the cached bottom (one more file), and fine-tuning reads the bottom's file again
            assert (cache.stats.misses, cache.stats.hits) == (3, 1)
    fast, slow = outcomes["lazy"], outcomes["arrays"]
    assert fast.phases["fine_tune"].cached_below == "block_add"
    n = len(data.y_test)
    assert abs(fast.test_accuracy - accuracy(fast.model, arrays.x_test, arrays.y_test)) <= 1 / n
    assert abs(fast.test_accuracy - slow.test_accuracy) <= 3 / n
    for a, b in zip(fast.top, slow.top, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-2)
    source.set_weights(weights)
    keras.utils.set_random_seed(0)
    again_cache = FeatureCache(tmp_path / "cache")
    again = transfer(source, "pool", lazy, cfg, QUIET, again_cache)
    assert again_cache.stats.misses == 0 and again_cache.stats.hits == 4
    assert again.test_accuracy == fast.test_accuracy


def _layer_types(model) -> set[str]:
    """Every layer class in `model`, nested models included."""
    found = {type(model).__name__}
    for layer in getattr(model, "layers", []):
        found |= _layer_types(layer)
    return found


def test_augmentation_changes_only_the_training_stream(data, demo_source_model):
    """On the fly and as cached copies: the transferred model carries no augmentation layer,
    its reported accuracy is its own on the unchanged held-out rows, both arms say how they
    were augmented, and the copies are made once (the same number on a re-run)."""
    from pipeline.model.training import accuracy, train_from_scratch, transfer

    settings = {"rotation": 0.05, "translation": 0.1, "fill": "constant"}
    for copies, applied in ((0, "on the fly"), (2, "cached copies")):
        cfg = TransferConfig(head_epochs=4, fine_tune_epochs=2, unfreeze_top=1, patience=50, record_curves=False,
                             augment=settings, augment_copies=copies)
        runs = [transfer(load_source_model(demo_source_model, "features").model, "features", data, cfg, QUIET)
                for _ in range(2)]
        out = runs[0]
        assert out.augmentation is not None and out.augmentation["applied"] == applied
        assert out.augmentation["layers"] == settings
        assert not {t for t in _layer_types(out.model) if t.startswith("Random")}
        assert out.test_accuracy == pytest.approx(accuracy(out.model, data.x_test, data.y_test))
        assert runs[1].test_accuracy == out.test_accuracy
        if copies:
            assert out.augmentation["training_rows"] == 3 * len(data.y_train)
    baseline = train_from_scratch(load_source_model(demo_source_model, "features").model, "features", data,
                                  cfg.model_copy(update={"baseline_epochs": 2}), QUIET)
    assert baseline.augmented and baseline.test_accuracy is not None


def test_augmented_copies_of_image_rows_are_cached_and_keyed_on_the_settings(data, tmp_path):
    """Lazy rows with K copies: the copies' features go to the cache once (a re-run reads
    every pass back, same accuracy); another rotation recomputes the training passes only."""
    import keras

    from pipeline.model.feature_cache import FeatureCache
    from pipeline.model.training import transfer

    lazy = _as_png_rows(data)
    source = _residual_source()
    weights = source.get_weights()
    cfg = TransferConfig(head_epochs=3, fine_tune_epochs=2, unfreeze_top=1, patience=50, record_curves=False,
                         augment={"rotation": 0.05, "fill": "constant"}, augment_copies=2)
    results = []
    for settings in (cfg, cfg, cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"rotation": 0.1})})):
        source.set_weights(weights)
        keras.utils.set_random_seed(0)
        cache = FeatureCache(tmp_path / "cache")
        out = transfer(source, "pool", lazy, settings, QUIET, cache)
        results.append((out.test_accuracy, cache.stats.hits, cache.stats.misses, cache.stats.images))
    first, again, rotated = results
    assert first[2] == 2 and first[3] == 3 * len(data.y_train) + len(data.y_test)  # copies went through once
    assert again[0] == first[0] and again[2] == 0 and again[3] == 0
    assert rotated[2] == 1 and rotated[3] == 3 * len(data.y_train)  # held-out features reused
