"""Write a TF Serving SavedModel version: signature, warmup records, golden set, parity, manifest.

Everything is written into a hidden staging directory next to the target and
renamed into `<root>/<name>/<version>` only after the parity check passed, so
TF Serving (which polls for integer directories) never sees half a version, and a
failure leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline import __version__
from pipeline.errors import ExportError, describe_os_error
from pipeline.model.saved_model_size import drop_save_function
from pipeline.process_identity import pid_alive
from pipeline.storage.versions import choose_version, existing_versions
from pipeline.verify.golden import GOLDEN_FILE

SIGNATURE_NAME = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MANIFEST_FILE = "tfrollout.json"
MANIFEST_FORMAT = "tfrollout.export/v1"


@dataclass(frozen=True)
class ExportSpec:
    root: Path
    model_name: str
    version: int | None
    input_name: str
    output_name: str
    warmup_records: int
    golden_size: int
    parity_atol: float


@dataclass(frozen=True)
class ExportResult:
    version: int
    version_dir: Path
    max_abs_diff: float
    signature: dict[str, Any]


def write_saved_model(model: Any, path: Path, input_name: str, output_name: str) -> None:
    """`serving_default`: {input_name: float32[-1, ...]} -> {output_name: model output}.

    No `archive.track(model)`: in Keras 3 the endpoint already tracks every variable it
    captures (`_all_variables`), and tracking the model as well stored each weight a
    second time (`variables/`), doubling every push, pull, delivery and loaded version.

    The saver's save function is then dropped from saved_model.pb (saved_model_size.py):
    no loader runs it, and it alone took a small model's directory past 1.1 × its raw
    weight bytes (demo: 1.11 → 1.08).
    """
    archive = keras.export.ExportArchive()
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=input_name)

    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: model(inputs, training=False)}

    archive.add_endpoint(name=SIGNATURE_NAME, fn=serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)
    drop_save_function(path)


def signature_spec(signature: Any) -> dict[str, Any]:
    """JSON view of a concrete signature: names, dtypes and shapes (-1 = any)."""

    def describe(specs: dict[str, tf.TensorSpec]) -> dict[str, Any]:
        return {key: {"dtype": spec.dtype.name,
                      "shape": [-1 if d is None else int(d) for d in spec.shape.as_list()]}
                for key, spec in sorted(specs.items())}

    _, inputs = signature.structured_input_signature
    return {"name": SIGNATURE_NAME, "inputs": describe(inputs),
            "outputs": describe(signature.structured_outputs)}


def write_warmup(path: Path, model_name: str, input_name: str, samples: np.ndarray) -> int:
    """TFRecord of PredictionLog (batch-1 Predict requests) that TF Serving replays on load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in samples:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME))
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(row[np.newaxis]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(samples)


PARITY_BATCH = 32  # bounded memory: activations of 32 inputs at a time, whatever the held-out size


def parity(model: Any, signature: Any, spec: ExportSpec, x: np.ndarray,
           batch_size: int = PARITY_BATCH) -> float:
    """Max |keras - savedmodel| over `x`, in batches; fails closed on no inputs and non-finite outputs.

    A model whose outputs hold NaN or Inf is refused here, before anything is published:
    NaN compares false with every tolerance, so it would otherwise pass as "no difference".
    Batching keeps export memory independent of the held-out set's size (one batch of
    ResNet50 activations instead of all of them at once).
    """
    if len(x) == 0:
        raise ExportError("parity: no held-out inputs to compare the SavedModel with the Keras model")
    worst = 0.0
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        expected = np.asarray(model(chunk, training=False))
        served = signature(**{spec.input_name: tf.constant(chunk)})[spec.output_name].numpy()
        if expected.shape != served.shape:
            raise ExportError(f"parity: SavedModel output shape {served.shape} != Keras {expected.shape}")
        for name, values in (("Keras model", expected), ("SavedModel", served)):
            bad = ~np.isfinite(values)
            if bad.any():
                where = [int(i) for i in np.argwhere(bad)[0]]
                shown = [where[0] + start, *where[1:]]
                raise ExportError(f"the {name} outputs {int(bad.sum())} non-finite value(s) (first "
                                  f"{values[tuple(where)]} at index {shown}) on {len(x)} held-out inputs; "
                                  "a model that outputs NaN or Inf is not exported")
        worst = max(worst, float(np.max(np.abs(expected - served))))
    return worst


def golden_outputs(signature: Any, spec: ExportSpec, x: np.ndarray) -> np.ndarray:
    """The SavedModel's outputs computed one example at a time.

    Kernels differ with batch size in the last float bits (≈1e-6 here), and verify sends
    the golden set one example per request by default, so the reference is computed the
    same way: a correctly served model then matches it to the bit.
    """
    rows = [signature(**{spec.input_name: tf.constant(row[np.newaxis])})[spec.output_name].numpy()
            for row in x]
    return np.concatenate(rows) if rows else np.zeros((0,), np.float32)


def library_versions() -> dict[str, str]:
    return {"tfrollout": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def quantization_report(model: Any, signature: Any, spec: ExportSpec, staging: Path, mode: str,
                        touched: list[str], x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    """Bytes, in-process latency (batch 1 and 64) and held-out accuracy, quantized vs float32.

    The float32 numbers come from a float32 SavedModel written beside the staging dir
    for the comparison and removed afterwards: same runtime, same inputs."""
    from pipeline.model.quantize import accuracy_of, directory_bytes, signature_latency_ms

    scratch = staging.with_name(staging.name + ".float32")
    try:
        write_saved_model(model, scratch, spec.input_name, spec.output_name)
        float_sig = tf.saved_model.load(str(scratch)).signatures[SIGNATURE_NAME]
        float_bytes = directory_bytes(scratch / "variables")
        sample = x[:64]  # the rows a latency call repeats (x may be the held-out file, read on demand)
        latency = {f"batch{b}": {"float32_ms": signature_latency_ms(float_sig, spec.input_name, sample, b),
                                 "quantized_ms": signature_latency_ms(signature, spec.input_name, sample, b)}
                   for b in (1, 64)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report: dict[str, Any] = {
        "mode": mode, "layers_changed": touched,
        "variables_bytes": {"float32": float_bytes, "quantized": directory_bytes(staging / "variables")},
        "latency_in_process": latency,
    }
    if y is not None:
        def run(batch: np.ndarray) -> np.ndarray:
            return signature(**{spec.input_name: tf.constant(batch)})[spec.output_name].numpy()

        before = accuracy_of(lambda b: model(b, training=False), x, y)
        after = accuracy_of(run, x, y)
        report["accuracy"] = {"float32": before, "quantized": after, "drop": before - after,
                              "examples": int(len(y))}
    return report


def export_model(model: Any, spec: ExportSpec, heldout_x: np.ndarray,
                 metadata: dict[str, Any], *, quantize: str = "none", heldout_y: np.ndarray | None = None,
                 check_quantized: Any = None) -> ExportResult:
    """Write, check and publish one version; nothing is left behind on failure.

    With `quantize`, the SavedModel is checked for parity against the Keras reference
    of that mode (see quantize.py), the cost is measured (`quantization` in the
    manifest) and `check_quantized(report)` may refuse it before anything is published."""
    from pipeline.model.quantize import reference_model, write_float16_saved_model
    from pipeline.model.saved_model_base import holds_saved_model

    if quantize == "float16" and holds_saved_model(model):
        raise ExportError("export.quantize = \"float16\" cannot store a SavedModel base's weights as float16 "
                          "(its signature reads its own float32 variables); use \"none\" or \"int8\" (the head)")
    model_dir = spec.root / spec.model_name
    version = choose_version(existing_versions(model_dir), spec.version, model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_staging(model_dir)
    staging = model_dir / f"{STAGING_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    final = model_dir / str(version)
    try:
        reference, touched = reference_model(model, quantize)
        if quantize == "float16":
            write_float16_saved_model(model, staging, spec.input_name, spec.output_name, SIGNATURE_NAME)
        else:
            write_saved_model(reference, staging, spec.input_name, spec.output_name)
        signature = tf.saved_model.load(str(staging)).signatures[SIGNATURE_NAME]
        golden_x = heldout_x[: spec.golden_size]
        max_diff = parity(reference, signature, spec, heldout_x)
        if not max_diff <= spec.parity_atol:  # NaN-safe: only a positive pass passes
            raise ExportError(f"parity check failed: SavedModel differs from the Keras model by "
                              f"{max_diff:.3g} (> {spec.parity_atol:g}) on {len(heldout_x)} held-out inputs")
        warmup = write_warmup(staging / WARMUP_FILE, spec.model_name, spec.input_name,
                              heldout_x[: spec.warmup_records])
        golden = {f"input.{spec.input_name}": golden_x,
                  f"output.{spec.output_name}": golden_outputs(signature, spec, golden_x)}
        if heldout_y is not None:  # lets the rollout score the served canary before promoting it
            golden["label"] = np.asarray(heldout_y[: spec.golden_size], np.int64)
        # numpy's stub matches **arrays against savez's keyword allow_pickle (numpy >= 2.1;
        # not passed, this project allows numpy 1.26): a false positive of the stub
        np.savez(staging / GOLDEN_FILE, **golden)  # type: ignore[arg-type]
        quantization = None
        if quantize != "none":
            quantization = quantization_report(model, signature, spec, staging, quantize, touched,
                                               heldout_x, heldout_y)
            if check_quantized is not None:
                check_quantized(quantization)  # raises to refuse: the staging dir is removed below
        sig = signature_spec(signature)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model_name": spec.model_name,
            "version": version,
            "signature": sig,
            "parity": {"max_abs_diff": max_diff, "atol": spec.parity_atol, "inputs": int(len(heldout_x))},
            "warmup_records": warmup,
            "golden": {"path": str(GOLDEN_FILE), "examples": int(len(golden_x)), "batch_size": 1},
            "versions": library_versions(),
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "quantization": quantization or {"mode": "none"},
            **metadata,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(staging, final)  # atomic on one filesystem; fails if the version appeared
        except OSError:
            raise ExportError(f"version {version} appeared at {final} during export; "
                              "not overwriting it") from None
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()
        if isinstance(exc, OSError):  # disk full / read-only while writing: one line naming the file
            raise ExportError(describe_os_error(exc, f"writing version {version}")) from None
        raise
    return ExportResult(version, final, max_diff, sig)


STAGING_PREFIX = ".staging-"
ORPHAN_AGE_S = 24 * 3600.0


def sweep_stale_staging(model_dir: Path, now: float | None = None) -> list[Path]:
    """Remove staging dirs of exports that died (kill -9, power loss) so they do not pile up.

    A staging dir is `.staging-<version>-<pid>-<random>`: it is an orphan when that pid
    no longer runs here, or (unparseable name, or a pid reused since) when it is a day old.
    """
    import time

    now = time.time() if now is None else now
    removed = []
    for path in model_dir.glob(f"{STAGING_PREFIX}*"):
        parts = path.name[len(STAGING_PREFIX):].split("-")
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if (pid is not None and pid != os.getpid() and not pid_alive(pid)) or age > ORPHAN_AGE_S:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed

