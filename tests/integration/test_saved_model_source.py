"""SavedModel (TF Hub-style) sources: a feature-vector signature is the base, and its
restored variables are what `full` / `fine-tune` train and what the export serves.

The task is made so the frozen features carry nothing about the label: the label is
the sign of x·u and the module's first layer is built orthogonal to u, so a head on
the frozen features is at chance and only training the module's variables can help.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TransferConfig
from pipeline.errors import ModelLoadError, TransferError
from pipeline.model.data import Dataset
from pipeline.model.exporter import ExportSpec, export_model
from pipeline.model.saved_model_base import signature_layer
from pipeline.model.source import load_source_model
from pipeline.model.training import transfer
from pipeline.progress import Reporter
from tests.integration.test_cli import run_cli

QUIET = Reporter(quiet=True)
DIM, HIDDEN, FEATURES = 16, 32, 8


def label_direction() -> np.ndarray:
    u = np.zeros(DIM, np.float32)
    u[0] = 1.0
    return u


def make_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x, (x @ label_direction() > 0).astype(np.int64)


def save_hub_module(path: Path, *, trainable: bool = True, outputs: int = 1, stop_gradient: bool = False) -> Path:
    """A tf.Module with a @tf.function feature-vector signature, saved as TF Hub models are."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    u = label_direction()
    w1 = rng.normal(size=(DIM, HIDDEN)) / np.sqrt(DIM)
    w1 = (w1 - np.outer(u, u @ w1)).astype(np.float32)  # blind to the label direction: frozen features at chance
    w2 = (rng.normal(size=(HIDDEN, FEATURES)) / np.sqrt(HIDDEN)).astype(np.float32)

    class FeatureVector(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="hub_module")
            self.w1 = tf.Variable(w1, trainable=trainable, name="block_1/kernel")
            self.b1 = tf.Variable(np.zeros(HIDDEN, np.float32), trainable=trainable, name="block_1/bias")
            self.w2 = tf.Variable(w2, trainable=trainable, name="block_2/kernel")
            self.scale = tf.Variable(2.0, trainable=False, name="scale")

        @tf.function(input_signature=[tf.TensorSpec([None, DIM], tf.float32, name="x")])
        def features(self, x):
            h = tf.nn.relu(x @ self.w1 + self.b1)
            if stop_gradient:
                h = tf.stop_gradient(h)
            vector = tf.tanh(self.scale * (h @ self.w2))
            out = {"feature_vector": vector}
            if outputs > 1:
                out["logits"] = tf.reduce_sum(vector, axis=1, keepdims=True)
            return out

    module = FeatureVector()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.features})
    return path


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hub_module(tmp_path_factory.mktemp("hub") / "feature_vector")


@pytest.fixture(scope="module")
def task() -> Dataset:
    x_train, y_train = make_task(400, 0)
    x_test, y_test = make_task(300, 1)
    return Dataset(x_train, y_train, x_test, y_test, ("neg", "pos"))


FAST = dict(head_epochs=12, fine_tune_epochs=12, learning_rate=2e-2, fine_tune_learning_rate=2e-2, batch_size=64,
            baseline=False, record_curves=False, patience=15, validation_fraction=0.0)


def run_strategy(hub_dir: Path, task: Dataset, strategy: str, **extra):
    source = load_source_model(hub_dir, None)
    layer = signature_layer(source.model)
    before = [v.numpy().copy() for v in layer.restored]
    outcome = transfer(source.model, None, task, TransferConfig(strategy=strategy, **{**FAST, **extra}), QUIET)
    changed = {name: float(np.abs(v.numpy() - b).max())
               for name, v, b in zip(layer.restored_names, layer.restored, before, strict=True)}
    return outcome, changed


@pytest.fixture(scope="module")
def outcomes(hub_dir: Path, task: Dataset):
    return {strategy: run_strategy(hub_dir, task, strategy)
            for strategy in ("feature-extraction", "fine-tune", "full")}


def test_training_the_module_variables_beats_the_frozen_features(outcomes):
    frozen, frozen_changed = outcomes["feature-extraction"]
    assert max(frozen_changed.values()) == 0.0 and frozen.unfrozen == []
    assert frozen.test_accuracy < 0.65  # the frozen features are blind to the label
    for strategy in ("fine-tune", "full"):
        outcome, changed = outcomes[strategy]
        print(f"{strategy}: held-out {outcome.test_accuracy:.3f} vs feature-extraction {frozen.test_accuracy:.3f}")
        assert outcome.test_accuracy >= frozen.test_accuracy + 0.2, strategy
        assert set(outcome.unfrozen) == {"block_1/kernel:0", "block_1/bias:0", "block_2/kernel:0"}
        assert changed["block_1/kernel:0"] > 1e-3 and changed["block_2/kernel:0"] > 1e-3
        assert changed["scale:0"] == 0.0  # not trainable in the SavedModel: never trained
    assert "fine_tune" in outcomes["fine-tune"][0].phases and "full" in outcomes["full"][0].phases


def test_fine_tune_trains_only_the_variables_named(hub_dir: Path, task: Dataset):
    outcome, changed = run_strategy(hub_dir, task, "fine-tune", unfreeze_variables=["^block_2/"],
                                    head_epochs=2, fine_tune_epochs=2)
    assert outcome.unfrozen == ["block_2/kernel:0"]
    assert changed["block_2/kernel:0"] > 0 and changed["block_1/kernel:0"] == 0.0
    with pytest.raises(TransferError, match=r"unfreeze_variables: '\^nope' matches none of .*block_1/kernel:0"):
        run_strategy(hub_dir, task, "fine-tune", unfreeze_variables=["^nope"])


def test_export_serves_the_fine_tuned_variables_within_parity(outcomes, task: Dataset, tmp_path: Path):
    import tensorflow as tf

    outcome, _ = outcomes["fine-tune"]
    spec = ExportSpec(tmp_path / "exports", "hub", None, "inputs", "probabilities", 2, 16, 1e-5)
    result = export_model(outcome.model, spec, task.x_test, {})
    print(f"parity max abs diff {result.max_abs_diff:.3g}")
    assert result.max_abs_diff <= 1e-5
    served = tf.saved_model.load(str(result.version_dir)).signatures["serving_default"]
    probabilities = served(inputs=tf.constant(task.x_test))["probabilities"].numpy()
    accuracy = float(np.mean(probabilities.argmax(axis=1) == task.y_test))
    assert accuracy == pytest.approx(outcome.test_accuracy, abs=1e-6)  # the trained values, not the source's
    assert accuracy > 0.8


def test_no_trainable_variables_and_full_is_one_clear_line(tmp_path: Path, task: Dataset):
    frozen_dir = save_hub_module(tmp_path / "frozen", trainable=False)
    source = load_source_model(frozen_dir, None)
    with pytest.raises(TransferError) as err:
        transfer(source.model, None, task, TransferConfig(strategy="full", **FAST), QUIET)
    assert err.value.exit_code == 4 and "\n" not in str(err.value)
    assert str(err.value) == (f"transfer.strategy = \"full\" trains the SavedModel's variables, but "
                              f"{frozen_dir.resolve()} (signature 'serving_default') has no trainable variables "
                              "(4 variables, none published as trainable); use transfer.strategy = "
                              "\"feature-extraction\"")
    # feature extraction needs no trainable variable: the same folder trains a head
    frozen = transfer(source.model, None, task, TransferConfig(strategy="feature-extraction",
                                                               **{**FAST, "head_epochs": 2}), QUIET)
    assert frozen.unfrozen == [] and "head" in frozen.phases


def test_a_function_without_gradients_is_refused_before_training(tmp_path: Path, task: Dataset):
    stopped = save_hub_module(tmp_path / "stopped", stop_gradient=True)
    source = load_source_model(stopped, None)
    with pytest.raises(TransferError, match=r"gives no gradient for 2 of the 3 variables to train "
                                            r"\(block_1/kernel:0, block_1/bias:0\)"):
        transfer(source.model, None, task, TransferConfig(strategy="fine-tune", **FAST), QUIET)


def test_signature_and_output_key_choose_the_base(tmp_path: Path):
    two = save_hub_module(tmp_path / "two", outputs=2)
    with pytest.raises(ModelLoadError) as err:
        load_source_model(two, None)
    assert str(err.value) == (f"{two}: signature 'serving_default' has 2 outputs (feature_vector, logits); "
                              "set model.output_key to the one that is a feature vector")
    base = load_source_model(two, None, output_key="feature_vector").model
    assert tuple(base.output_shape) == (None, FEATURES)
    with pytest.raises(ModelLoadError, match=r"no output 'probs' \(model.output_key\); its outputs: "
                                             r"feature_vector, logits"):
        load_source_model(two, None, output_key="probs")
    with pytest.raises(ModelLoadError, match=r"no signature 'feature_vector' \(model.signature\); its "
                                             r"signatures: serving_default"):
        load_source_model(two, None, signature="feature_vector")


def test_a_saved_keras_model_reloads_with_the_trained_variables(outcomes, task: Dataset, tmp_path: Path):
    import keras

    import pipeline.model.saved_model_base  # noqa: F401 - registers the layer

    outcome, _ = outcomes["full"]
    outcome.model.save(tmp_path / "transferred.keras")
    reloaded = keras.models.load_model(tmp_path / "transferred.keras", compile=False)
    np.testing.assert_allclose(reloaded(task.x_test[:32]).numpy(), outcome.model(task.x_test[:32]).numpy(),
                               atol=1e-6)


def test_cli_fine_tunes_a_hub_folder_end_to_end(hub_dir: Path, tmp_path: Path):
    x, y = make_task(500, 3)
    np.savez(tmp_path / "task.npz", x=x, y=y)
    (tmp_path / "deploy.toml").write_text(
        f'[model]\npath = "{hub_dir}"\nsignature = "serving_default"\n'
        '[data]\nsource = "npz"\npath = "task.npz"\n'
        '[transfer]\nhead_epochs = 5\nfine_tune_epochs = 10\nfine_tune_learning_rate = 0.03\nbatch_size = 64\n'
        'record_curves = false\n'
        'unfreeze_variables = ["^block_"]\n'
        '[export]\nroot = "exports"\nmodel_name = "hub"\n')
    proc = run_cli("deploy", "--json", "--until", "export", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)["stages"]
    report = json.loads(Path(stages["transfer"]["outputs"]["report"]).read_text())
    print(f"cli fine-tune held-out {report['transfer']['test_accuracy']:.3f}, "
          f"parity {stages['export']['outputs']['parity_max_abs_diff']:.3g}")
    assert report["unfrozen_layers"] == ["block_1/kernel:0", "block_1/bias:0", "block_2/kernel:0"]
    assert report["transfer"]["test_accuracy"] > 0.8
    assert report["baseline"]["skipped_reason"].startswith("a SavedModel base has no architecture")
    assert stages["export"]["outputs"]["parity_max_abs_diff"] <= 1e-5
    assert "trained 3 of the SavedModel's 4 variables" in proc.stderr


def test_keras_export_directory_with_the_default_strategy(tmp_path: Path):
    """A `model.export()` folder (variables named `Conv1/kernel:0`) used to end in an internal error."""
    import keras

    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu", name="Conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(10, activation="softmax", name="classifier")(h)
    keras.Model(inputs, outputs, name="exported").export(tmp_path / "exported", format="tf_saved_model",
                                                        verbose=False)
    (tmp_path / "deploy.toml").write_text(f'[model]\npath = "{tmp_path / "exported"}"\n'
                                          '[export]\nroot = "exports"\n')
    proc = run_cli("deploy", "--json", "--until", "export", "--set", "transfer.head_epochs=3",
                   "--set", "transfer.fine_tune_epochs=2", "--set", "transfer.record_curves=false", cwd=tmp_path)
    assert "internal error" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)["stages"]
    report = json.loads(Path(stages["transfer"]["outputs"]["report"]).read_text())
    assert "Conv1/kernel:0" in report["unfrozen_layers"] and "bn/moving_mean:0" not in report["unfrozen_layers"]
    assert "look like class probabilities" in proc.stderr
    assert stages["export"]["outputs"]["parity_max_abs_diff"] <= 1e-5


def test_layer_settings_are_refused_for_a_saved_model_base(hub_dir: Path, task: Dataset):
    source = load_source_model(hub_dir, None)
    with pytest.raises(TransferError) as err:
        transfer(source.model, None, task, TransferConfig(unfreeze_after="block_1", **FAST), QUIET)
    assert str(err.value) == ("transfer.unfreeze_after = 'block_1' names a layer, and a SavedModel base has none; "
                              "choose its variables with transfer.unfreeze_variables")
    assert err.value.exit_code == 4


def test_unfreeze_variables_is_refused_for_a_keras_base(task: Dataset):
    import keras

    inputs = keras.Input((DIM,), name="x")
    features = keras.layers.Dense(4, activation="relu", name="features")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="classifier")(features))
    with pytest.raises(TransferError, match=r"selects a SavedModel base's variables; this base is a Keras model"):
        transfer(model, "features", task, TransferConfig(unfreeze_variables=["dense"], **FAST), QUIET)


def test_a_source_folder_changed_since_training_is_refused_on_reload(tmp_path: Path):
    import shutil

    import keras

    copy = Path(shutil.copytree(save_hub_module(tmp_path / "hub"), tmp_path / "copy"))
    load_source_model(copy, None).model.save(tmp_path / "base.keras")
    (copy / "assets").mkdir(exist_ok=True)
    (copy / "assets" / "vocab.txt").write_text("changed")
    with pytest.raises(ModelLoadError, match=r"copy: the source SavedModel this model was trained from is "
                                             r"missing or changed since \(sha256 differs\)"):
        keras.models.load_model(tmp_path / "base.keras", compile=False)


def test_float16_export_of_a_saved_model_base_is_refused_and_int8_keeps_parity(outcomes, task: Dataset,
                                                                                tmp_path: Path):
    from pipeline.errors import ExportError

    outcome, _ = outcomes["full"]
    spec = ExportSpec(tmp_path / "exports", "hub", None, "inputs", "probabilities", 2, 16, 1e-5)
    with pytest.raises(ExportError, match=r"cannot store a SavedModel base's weights as float16"):
        export_model(outcome.model, spec, task.x_test, {}, quantize="float16")
    assert not (tmp_path / "exports" / "hub").exists()
    result = export_model(outcome.model, spec, task.x_test, {}, quantize="int8", heldout_y=task.y_test)
    assert result.max_abs_diff <= 1e-5


def test_the_feature_cache_stores_a_saved_model_base_features_and_keys_on_its_weights(hub_dir: Path,
                                                                                       tmp_path: Path):
    from pipeline.model.feature_cache import FeatureCache, FeatureFile

    x, _ = make_task(50, 5)
    np.save(tmp_path / "rows.npy", x)
    rows = FeatureFile.open(tmp_path / "rows.npy")
    base = load_source_model(hub_dir, None).model
    with FeatureCache(tmp_path / "cache", QUIET) as cache:
        first = cache.features(base, rows, "features")
        again = cache.features(base, rows, "features")
        assert (cache.stats.misses, cache.stats.hits) == (1, 1)
        np.testing.assert_allclose(first.load(), base.predict(x, verbose=0), atol=1e-3)  # float16 on disk
        layer = signature_layer(base)
        layer.restored[0].assign(layer.restored[0].numpy() * 2.0)  # a trained variable changes the key
        changed = cache.features(base, rows, "features")
        assert cache.stats.misses == 2 and changed.path != again.path
