"""The `tfrollout` command as a user runs it: exit codes, one-line errors, JSON, nothing half-written."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import TFROLLOUT

FAST = ["--set", "transfer.head_epochs=3", "--set", "transfer.fine_tune_epochs=1",
        "--set", "transfer.baseline=false"]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([TFROLLOUT, *args], cwd=cwd, capture_output=True, text=True, env=full_env,
                          timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    # TensorFlow's start-up log lines must not bury the error.
    assert not [line for line in lines if line.startswith(("I0000", "E0000", "W0000", "WARNING: All log"))]


@pytest.fixture
def workdir(tmp_path: Path, demo_source_model: Path) -> Path:
    (tmp_path / "deploy.toml").write_text(
        f'[model]\npath = "{demo_source_model}"\n[export]\nroot = "exports"\n')
    return tmp_path


def test_config_check_json_shows_overrides(workdir: Path):
    proc = run_cli("config", "check", "--json", "--set", "export.model_name=abc", cwd=workdir,
                   env={"TFROLLOUT_TRANSFER__SEED": "9"})
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)["config"]
    assert config["export"]["model_name"] == "abc" and config["transfer"]["seed"] == 9


def test_bad_config_value_exit_2_names_key(workdir: Path):
    proc = run_cli("config", "check", "--set", "export.warmup_records=5000", cwd=workdir)
    assert proc.returncode == 2
    assert_one_line_error(proc, "export.warmup_records")


@pytest.mark.parametrize(
    ("overrides", "fragment", "setup"),
    [
        (["model.path=missing.keras"], "model not found: missing.keras", None),
        (["model.path=model.onnx"], "unsupported model file extension '.onnx'", "onnx"),
        (["model.path=corrupt.keras"], "corrupt.keras: not a valid .keras archive", "corrupt"),
        (["model.cut_layer=nope"], "no layer named 'nope'", None),
        (["data.source=dir", "data.path=one_class"], "found 1 class folder", "one_class"),
        (["data.source=npz", "data.path=bad.npz"], "x has 6 samples but y has 5 labels", "bad_npz"),
        (["data.source=npz", "data.path=shape.npz"], "does not fit the model input shape (8, 8, 1)",
         "shape_npz"),
    ],
)
def test_bad_inputs_fail_cleanly_and_write_no_export(workdir: Path, overrides, fragment, setup):
    if setup == "onnx":
        (workdir / "model.onnx").write_bytes(b"\x08\x01")
    elif setup == "corrupt":
        (workdir / "corrupt.keras").write_bytes(b"garbage" * 10)
    elif setup == "one_class":
        from PIL import Image

        (workdir / "one_class" / "cats").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(workdir / "one_class" / "cats" / "a.png")
    elif setup == "bad_npz":
        np.savez(workdir / "bad.npz", x=np.zeros((6, 8, 8, 1)), y=np.arange(5))
    elif setup == "shape_npz":
        np.savez(workdir / "shape.npz", x=np.zeros((6, 9, 9, 3)), y=np.arange(6) % 2)
    args = ["deploy", *FAST]
    for item in overrides:
        args += ["--set", item]
    proc = run_cli(*args, cwd=workdir)
    assert_one_line_error(proc, fragment)
    assert proc.returncode == 3
    exports = workdir / "exports"
    assert not exports.exists() or not any(exports.rglob("*"))


def test_debug_shows_traceback(workdir: Path):
    proc = run_cli("deploy", "--debug", "--set", "model.path=missing.keras", cwd=workdir)
    assert proc.returncode == 3 and "Traceback" in proc.stderr


def test_json_failure_report_is_machine_readable(workdir: Path):
    proc = run_cli("deploy", "--json", "--set", "model.cut_layer=nope", cwd=workdir)
    report = json.loads(proc.stdout)
    assert report["ok"] is False and "nope" in report["error"]
    assert report["stages"]["load"]["status"] == "failed"


def test_stage_out_of_order_is_explained(workdir: Path):
    proc = run_cli("export", cwd=workdir)
    assert_one_line_error(proc, "no earlier run record")
    assert proc.returncode == 2


def test_a_model_below_the_quality_bar_stops_before_export(workdir: Path):
    proc = run_cli("deploy", "--json", "--until", "export", *FAST, "--set", "transfer.baseline=true",
                   "--set", "transfer.baseline_epochs=3", "--set", "gate.min_accuracy=0.999",
                   "--set", "gate.min_gain_over_baseline=0.5", cwd=workdir)
    assert proc.returncode == 9, proc.stderr
    assert_one_line_error(proc, "quality gate failed: held-out accuracy 0.")
    assert "< min_accuracy 0.999 (and 1 more failed check(s))" in proc.stderr
    report = json.loads(proc.stdout)
    gate = report["gate"]
    assert gate["passed"] is False and gate["enforced"] is True
    assert [c["name"] for c in gate["checks"]] == ["min_accuracy", "min_gain_over_baseline"]
    assert sum(map(sum, gate["candidate"]["confusion"])) == gate["candidate"]["examples"] > 0
    assert report["stages"]["gate"]["status"] == "failed" and "export" not in report["stages"]
    assert Path(gate["confusion_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    transfer = json.loads(Path(report["stages"]["transfer"]["outputs"]["report"]).read_text())
    phases = transfer["transfer"]["phases"]
    # one point per epoch, plus one at the same epoch where early stopping restored best weights
    epochs = [point[0] for point in transfer["curves"]["transfer"]]
    assert sorted(set(epochs)) == list(range(1, sum(p["epochs_run"] for p in phases.values()) + 1))
    assert epochs == sorted(epochs)  # epochs continue from the head into fine-tuning
    scratch_epochs = [point[0] for point in transfer["curves"]["from scratch"]]
    assert sorted(set(scratch_epochs)) == list(range(1, transfer["baseline"]["epochs_run"] + 1))
    # the curve ends on the model the run hands on (restored weights included)
    assert transfer["curves"]["transfer"][-1][2] == pytest.approx(transfer["transfer"]["test_accuracy"], abs=0.01)
    assert Path(transfer["curves_png"]).stat().st_size > 10_000
    assert set(transfer["time_to_baseline_accuracy"]) == {"target", "transfer_s", "baseline_s", "ratio"}
    assert not (workdir / "exports").exists()  # nothing exported, so nothing can be pushed

    # the override lets it through, and says so
    proc = run_cli("deploy", "--json", "--from", "gate", "--until", "gate", *FAST, "--set",
                   "transfer.baseline=true", "--set", "transfer.baseline_epochs=3",
                   "--set", "gate.min_accuracy=0.999", "--set", "gate.enforce=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    gate = json.loads(proc.stdout)["stages"]["gate"]["outputs"]
    assert gate["passed"] is False and gate["enforced"] is False
    assert "published anyway (gate.enforce = false" in " ".join(proc.stderr.split())  # rich wraps lines

    # an export under enforce=true refuses a model the gate failed; the override is in the manifest
    refused = run_cli("deploy", "--from", "export", "--until", "export", *FAST, cwd=workdir)
    assert refused.returncode == 9 and not (workdir / "exports").exists()
    assert_one_line_error(refused, "the quality gate failed for this run's model")
    proc = run_cli("deploy", "--json", "--from", "export", "--until", "export", *FAST,
                   "--set", "gate.enforce=false", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(Path(json.loads(proc.stdout)["stages"]["export"]["outputs"]["manifest"]).read_text())
    assert manifest["quality_gate"]["overridden"] is True and manifest["quality_gate"]["passed"] is False
    assert manifest["quality_gate"]["checks"][0]["name"] == "min_accuracy"


def test_preprocess_is_baked_into_the_signature(workdir: Path):
    """data.preprocess: training sees mapped pixels, the SavedModel takes raw ones (0-255)."""
    import tensorflow as tf

    proc = run_cli("deploy", "--json", "--until", "export", *FAST, "--set", "data.preprocess=symmetric",
                   "--set", "gate.min_accuracy=0", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)["stages"]
    export = stages["export"]["outputs"]
    manifest = json.loads(Path(export["manifest"]).read_text())
    assert manifest["preprocess"]["mode"] == "symmetric" and "raw pixels" in manifest["preprocess"]["inputs"]
    report = json.loads(Path(stages["transfer"]["outputs"]["report"]).read_text())
    assert report["preprocess"] == {"setting": "symmetric", "mode": "symmetric",
                                    "signature_takes": "raw pixels 0-255"}
    with np.load(stages["transfer"]["outputs"]["heldout"]) as heldout:
        raw = heldout["x"]
    assert raw.max() > 200 and raw.min() >= 0  # the demo's pixels, unscaled
    served = tf.saved_model.load(export["version_dir"]).signatures["serving_default"]
    out = served(inputs=tf.constant(raw[:8]))["probabilities"].numpy()
    transferred = Path(stages["transfer"]["outputs"]["model_path"])
    import keras

    import pipeline.model.preprocess_layer  # noqa: F401 - registers the layer
    keras_model = keras.models.load_model(transferred)
    np.testing.assert_allclose(out, keras_model(raw[:8]).numpy(), atol=1e-5)
    inner = keras_model.layers[-1]  # the trained model behind the preprocessing layer
    np.testing.assert_allclose(out, inner(raw[:8] / 127.5 - 1.0).numpy(), atol=1e-5)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-4)


def test_preprocess_that_needs_rgb_refuses_grey_images(workdir: Path):
    proc = run_cli("deploy", "--until", "transfer", *FAST, "--set", "data.preprocess=resnet50", cwd=workdir)
    assert proc.returncode != 0
    assert_one_line_error(proc, "data.preprocess = 'resnet50' needs RGB images (3 channels); the model input has 1")


@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_quantized_export_reports_bytes_latency_accuracy_and_keeps_parity(workdir: Path, mode: str):
    import tensorflow as tf

    proc = run_cli("deploy", "--json", "--until", "export", *FAST, "--set", f"export.quantize={mode}",
                   "--set", "gate.min_accuracy=0", "--set", "gate.max_quantization_drop=1", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    export = json.loads(proc.stdout)["stages"]["export"]["outputs"]
    manifest = json.loads(Path(export["manifest"]).read_text())
    q = manifest["quantization"]
    assert q["mode"] == mode and manifest["parity"]["max_abs_diff"] <= 1e-5  # against the mode's reference
    sizes = q["variables_bytes"]
    assert sizes["quantized"] < (0.6 if mode == "float16" else 0.8) * sizes["float32"]
    if mode == "int8":
        assert "head_output" in q["layers_changed"] and not any("conv" in n for n in q["layers_changed"])
    acc = q["accuracy"]
    assert 0 <= acc["quantized"] <= 1 and acc["drop"] == pytest.approx(acc["float32"] - acc["quantized"])
    for batch in ("batch1", "batch64"):
        assert q["latency_in_process"][batch]["quantized_ms"] > 0
    # the golden set (what verify compares served outputs with) is the quantized model's own output
    with np.load(Path(export["golden"])) as golden:
        x, expected = golden["input.inputs"], golden["output.probabilities"]
    served = tf.saved_model.load(export["version_dir"]).signatures["serving_default"]
    got = np.concatenate([served(inputs=tf.constant(row[None]))["probabilities"].numpy() for row in x[:4]])
    np.testing.assert_allclose(got, expected[:4], atol=1e-6)
    assert f"quantized {mode}: weights" in " ".join(proc.stderr.split())


def test_tfrecord_source_deploys_end_to_end_with_the_records_held_out_pixels(workdir: Path):
    """`data.source=tfrecord` with a glob: handwritten digits written as PNG records in two shards
    by TensorFlow's own writer, deployed to the local runtime and verified over gRPC; the
    exported model's held-out set is those records' pixels."""
    import io

    import tensorflow as tf
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images[:200] * 16).clip(0, 255).astype(np.uint8)
    for shard in range(2):
        with tf.io.TFRecordWriter(str(workdir / f"digits-{shard}.tfrecord")) as writer:
            for image, label in zip(pixels[shard::2], digits.target[:200][shard::2], strict=True):
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png.getvalue()])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    from tests.support.procs import free_port

    port = free_port()
    served = ["--set", f"rollout.grpc_port={port}", "--set", "rollout.rest_port=0",
              "--set", f"verify.endpoint=127.0.0.1:{port}"]
    try:  # the whole pipeline: export, push to the file store, the local runtime, verify over gRPC
        proc = run_cli("deploy", "--json", *FAST, "--set", "data.source=tfrecord",
                       "--set", f"data.path={workdir}/*.tfrecord", "--set", "gate.min_accuracy=0", *served,
                       cwd=workdir)
    finally:
        stopped = run_cli("serve", "stop", "--json", *served, cwd=workdir)
    assert json.loads(stopped.stdout or "{}").get("running") is False, stopped.stderr
    assert proc.returncode == 0, proc.stderr
    report_json = json.loads(proc.stdout)
    assert report_json["ran"][-2:] == ["rollout", "verify"]
    assert report_json["stages"]["verify"]["status"] == "ok"
    stages = report_json["stages"]
    report = json.loads(Path(stages["transfer"]["outputs"]["report"]).read_text())
    assert report["labelled_examples"] + report["test_examples"] == 200
    assert report["classes"] == [str(c) for c in range(10)]
    with np.load(stages["transfer"]["outputs"]["heldout"]) as heldout:
        held = np.round(heldout["x"][..., 0] * 255).astype(np.uint8)
    assert len(held) == report["test_examples"]
    assert all(any(np.array_equal(h, p) for p in pixels) for h in held[:10])  # records' own pixels
    manifest = json.loads(Path(stages["export"]["outputs"]["manifest"]).read_text())
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["atol"]
    assert manifest["classes"] == report["classes"]


def test_an_image_folder_streams_and_re_runs_reuse_features_results_and_held_out_set(workdir: Path):
    """`data.source=dir`: the rows stay files (decoded pass by pass). A run with another head
    setting reads every frozen-base pass and the held-out set back from the cache (no image
    forwarded); a run identical to it reuses both arms' results and reports the same numbers."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 5
    for i, (image, label) in enumerate(zip(digits.images[keep][:150], digits.target[keep][:150], strict=True)):
        folder = workdir / "imgs" / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    args = ["deploy", "--json", "--until", "transfer", "--set", "transfer.fine_tune_epochs=1",
            "--set", "transfer.baseline_epochs=2", "--set", "data.source=dir", "--set", "data.path=imgs"]
    reports, held = [], []
    for head_epochs in (3, 4, 4):
        proc = run_cli(*args, "--set", f"transfer.head_epochs={head_epochs}", cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        outputs = json.loads(proc.stdout)["stages"]["transfer"]["outputs"]
        reports.append(json.loads(Path(outputs["report"]).read_text()))
        with np.load(outputs["heldout"]) as heldout:
            held.append((heldout["x"], heldout["y"]))
    first, second, third = reports
    assert first["data"]["streamed"] is True and first["data"]["decoded_bytes"] == 0
    assert first["feature_cache"]["misses"] >= 2 and first["feature_cache"]["bytes_written"] > 0
    assert first["baseline"]["reused"] is False and first["transfer"]["reused"] is False
    assert first["baseline"]["batchnorm"]["layers_recalibrated"] >= 1  # re-estimated over streamed batches
    assert second["transfer"]["reused"] is False and second["transfer"]["phases"]["head"]["epochs_run"] == 4
    assert second["feature_cache"]["misses"] == 0 and second["feature_cache"]["images_forwarded"] == 0
    assert second["feature_cache"]["hits"] == first["feature_cache"]["misses"] + first["feature_cache"]["hits"]
    assert third["transfer"]["reused"] is True and third["baseline"]["reused"] is True
    assert third["transfer"]["test_accuracy"] == second["transfer"]["test_accuracy"]
    assert third["baseline"]["test_accuracy"] == second["baseline"]["test_accuracy"]
    assert third["feature_cache"]["images_forwarded"] == 0
    assert all(np.array_equal(held[0][i], run[i]) for run in held[1:] for i in (0, 1))
    assert held[0][0].shape == (first["test_examples"], 8, 8, 1) and held[0][0].max() <= 1.0


def test_a_source_with_never_set_batchnorm_statistics_is_refused_before_training(tmp_path: Path):
    """MobileNetV2 with fresh weights (BatchNorm moving statistics still 0 / 1): its pooled
    features are the same for every image, so the run stops at the source check — before any
    training phase — with one line naming BatchNorm."""
    import time

    import keras
    from PIL import Image

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=3)
    net.save(tmp_path / "mobilenet_fresh.keras")
    rng = np.random.default_rng(0)
    for label in range(2):
        (tmp_path / "imgs" / f"c{label}").mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) // (label + 1)
            Image.fromarray(pixels).save(tmp_path / "imgs" / f"c{label}" / f"{i}.png")
    (tmp_path / "deploy.toml").write_text(
        f'[model]\npath = "{tmp_path / "mobilenet_fresh.keras"}"\n[data]\nsource = "dir"\npath = "imgs"\n'
        'preprocess = "mobilenet_v2"\n')
    t0 = time.perf_counter()
    proc = run_cli("deploy", "--until", "transfer", cwd=tmp_path)
    print(f"refused after {time.perf_counter() - t0:.1f} s (whole CLI run)")
    assert proc.returncode == 4
    assert_one_line_error(proc, "source model check")
    assert "BatchNorm" in proc.stderr and "same for all" in proc.stderr
    assert "train head" not in proc.stderr and "baseline" not in proc.stderr


def test_a_grey_image_folder_for_an_rgb_model_is_converted_with_a_warning(tmp_path: Path):
    """12 of 20 images are 8-bit grayscale, the model takes RGB: the run goes on (Pillow replicates
    the grey channel) and says so once, on stderr and in the transfer report."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="pixels")
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(pooled)
    keras.Model(inputs, outputs, name="tiny_rgb").save(tmp_path / "rgb.keras")
    rng = np.random.default_rng(0)
    for label, level in (("dark", 60), ("light", 190)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert("L" if i < 6 else "RGB").save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "deploy.toml").write_text(
        f'[model]\npath = "{tmp_path / "rgb.keras"}"\n[data]\nsource = "dir"\npath = "imgs"\n')
    proc = run_cli("deploy", "--json", "--until", "transfer", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = "12 of 20 images are grayscale (L); converted to RGB for the model's 3-channel input"
    assert f"warning: {line}" in " ".join(proc.stderr.split())
    assert " ".join(proc.stderr.split()).count("converted to RGB") == 1
    outputs_ = json.loads(proc.stdout)["stages"]["transfer"]["outputs"]
    data = json.loads(Path(outputs_["report"]).read_text())["data"]
    assert data["channel_conversion"] == {"images": 12, "of": 20, "modes": {"L": 12}, "to": "RGB",
                                          "model_channels": 3}
    assert data["warnings"] == [line] and data["streamed"] is True


def test_publish_only_defers_the_serving_comparison_and_the_rollout_runs_it_first(workdir: Path):
    """gate.max_drop_vs_serving with a Docker engine nobody listens for: `--until push` publishes
    (the comparison is deferred, and says why); a later rollout of that version from this checkout
    runs the comparison before anything else and fails closed on the engine it cannot read (exit 9)."""
    from tests.support.procs import free_port

    engine = ["--set", "gate.max_drop_vs_serving=0.02", "--set", "rollout.target=docker",
              "--set", f"rollout.docker_host=tcp://127.0.0.1:{free_port()}"]
    proc = run_cli("deploy", "--json", "--until", "push", *FAST, *engine, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ran"] == ["load", "transfer", "gate", "export", "push"]
    gate = report["stages"]["gate"]["outputs"]
    assert gate["passed"] and gate["serving_version"] is None and gate["serving_accuracy"] is None
    assert gate["serving_deferred"]["reason"].startswith("deferred: the run stops before rollout (--until push)")
    assert gate["serving_deferred"]["max_drop_vs_serving"] == 0.02 and gate["serving_note"] == gate[
        "serving_deferred"]["reason"]
    assert json.loads(Path(gate["report"]).read_text())["serving_deferred"] == gate["serving_deferred"]
    assert report["stages"]["push"]["outputs"]["version"] == 1  # published: not promoted
    manifest = json.loads(Path(report["stages"]["export"]["outputs"]["manifest"]).read_text())
    assert manifest["quality_gate"]["serving_deferred"] == gate["serving_deferred"]  # travels with v1

    # `tfrollout rollout` of v1 in this checkout (the rollout stage itself: tests/unit/test_gate_deferral.py)
    later = run_cli("rollout", "--json", *engine, cwd=workdir)
    assert later.returncode == 9, later.stderr
    assert_one_line_error(later, "quality gate: the comparison with serving deferred at the gate could not "
                                 "read the serving host: Docker engine at tcp://127.0.0.1:")
    assert "nothing is delivered or promoted" in later.stderr
    failed = json.loads(later.stdout)
    assert failed["ok"] is False and "comparison with serving deferred" in failed["error"]
