"""transfer stage: adapt the source model to the target data and prove it helped.

Writes `transfer_report.json` (transfer vs from-scratch held-out accuracy, wall
times), the transferred `.keras` model and the held-out split used later by the
export parity check and the golden set.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import DataConfig, TransferConfig
from pipeline.errors import DataError
from pipeline.model.data import Dataset, demo_target_domain, image_dir_rows
from pipeline.model.image_set import channel_conversion_of, is_lazy
from pipeline.model.npz_source import load_npz
from pipeline.model.source import SourceModel, load_source_model
from pipeline.progress import Reporter
from pipeline.results import LoadOutput, TransferOutput
from pipeline.run import StageContext


def load_target_data(cfg: DataConfig, input_shape: tuple[int | None, ...]) -> Dataset:
    """Dispatch on `data.source`; every loader checks samples fit the model input.

    Image folders and TFRecords come back as lazy rows (decoded pass by pass); the
    demo and .npz as arrays."""
    if cfg.source == "demo":
        data = demo_target_domain(cfg.labels_per_class, cfg.test_fraction, cfg.seed)
        if tuple(input_shape) != data.x_train.shape[1:]:
            raise DataError(f"demo data: 8x8x1 digit images do not fit the model input shape "
                            f"{tuple(-1 if d is None else d for d in input_shape)}")
        return data
    if cfg.path is None:
        raise DataError(f"data.path is required when data.source = {cfg.source!r}")
    if cfg.source == "npz":
        return load_npz(cfg.path, input_shape, cfg.test_fraction, cfg.seed)
    if cfg.source == "tfrecord":
        from pipeline.model.tfrecord_source import tfrecord_rows

        return tfrecord_rows(cfg.path, input_shape, cfg.test_fraction, cfg.seed,
                             cfg.image_feature, cfg.label_feature)
    return image_dir_rows(cfg.path, input_shape, cfg.test_fraction, cfg.seed)


def map_inputs(cfg: DataConfig, data: Dataset) -> tuple[str, Dataset, np.ndarray]:
    """(mode, the data in the model's input scale, the held-out inputs as the saved model takes them).

    With a preprocessing mode, training sees mapped pixels while the held-out set kept
    for the gate, parity and golden outputs stays raw: the saved model maps it itself."""
    from dataclasses import replace

    from pipeline.model.preprocess import apply, needs_rgb, raw_pixels, resolve

    mode = resolve(cfg.preprocess)
    if mode == "none":
        return mode, data, data.x_test
    if needs_rgb(mode) and data.x_train.shape[-1] != 3:
        raise DataError(f"data.preprocess = {cfg.preprocess!r} needs RGB images (3 channels); the model "
                        f"input has {data.x_train.shape[-1]}")
    if is_lazy(data.x_train):  # the mapping runs in the decode stream
        return mode, replace(data, x_train=data.x_train.with_mode(mode), x_test=data.x_test.with_mode(mode)), \
            data.x_test.with_mode("raw")
    raw_train, raw_test = raw_pixels(data.x_train, cfg.source), raw_pixels(data.x_test, cfg.source)
    mapped = replace(data, x_train=apply(raw_train, mode).astype(np.float32),
                     x_test=apply(raw_test, mode).astype(np.float32))
    return mode, mapped, raw_test.astype(np.float32)


def source_from(ctx: StageContext) -> SourceModel:
    """The model the load stage read: kept in memory by this process, else re-read from its path."""
    if ctx.source_model is not None:
        return ctx.source_model
    loaded = ctx.output(LoadOutput)
    model = ctx.config.model
    source = load_source_model(loaded.path, loaded.cut_layer, signature=model.signature,
                               output_key=model.output_key)
    ctx.source_model = source
    return source


def speed_report(outcome: Any, baseline: Any, workdir: Any) -> dict[str, Any]:
    """Per-epoch curves, time to reach the baseline's final accuracy, and the picture of both."""
    from pipeline.model.plots import plot_curves
    from pipeline.model.training import time_to_accuracy

    curves = {"transfer": outcome.curve.to_json() if outcome.curve else []}
    if baseline is not None and baseline.curve is not None:
        curves["from scratch"] = baseline.curve.to_json()
    out: dict[str, Any] = {"curves": curves}
    if outcome.curve and baseline is not None and baseline.test_accuracy is not None:
        reached = time_to_accuracy(outcome.curve.points, baseline.test_accuracy)
        out["time_to_baseline_accuracy"] = {
            "target": baseline.test_accuracy, "transfer_s": reached, "baseline_s": round(baseline.wall_s, 3),
            "ratio": None if reached is None or not baseline.wall_s else round(reached / baseline.wall_s, 3)}
    if any(curves.values()):
        out["curves_png"] = str(plot_curves(curves, workdir.resolve() / "transfer_curves.png",
                                            "held-out accuracy: transfer vs from scratch"))
    return out


def check_source_health(source: SourceModel, data: Dataset, preprocess: str, reporter: Reporter) -> Any:
    """Refuse a base whose features on a sample of the target data are NaN or constant,
    before any training (see source_health); warn when they barely vary."""
    from pipeline.errors import TransferError
    from pipeline.model import source_health
    from pipeline.model.training import split_base

    t0 = time.perf_counter()
    base = split_base(source.model, source.cut_layer)
    cut = source.cut_layer or "the signature's output"
    health = source_health.check(source.model, base, data.x_train, preprocess, cut)
    if health.error is not None:
        raise TransferError(f"source model check: {health.error}")
    for warning in health.warnings:
        reporter.note(f"warning: source model check: {warning}")
    reporter.note(f"source model check: {health.rows} target examples through the base in "
                  f"{time.perf_counter() - t0:.1f} s; {health.alive_fraction:.0%} of {health.dimensions} "
                  f"features vary")
    return health


def data_fingerprints(data: Dataset) -> list[str]:
    """What both arms' records are keyed on for the rows: images (or records) and labels."""
    return [data.x_train.fingerprint(), data.x_test.fingerprint(), labels_digest(data.y_train),
            labels_digest(data.y_test)]


# Settings that change only the baseline: a different one must not retrain the transfer arm.
BASELINE_ONLY = {"baseline", "baseline_max_examples", "baseline_epochs"}


@dataclass(frozen=True)
class RecordKeys:
    """Both arms' record keys, taken before anything trains: training changes the source
    model's weights and layers' trainable flags, which the keys are made from."""

    transfer: str
    baseline: str | None  # None: the architecture has no config to hash (a wrapped SavedModel)


def record_keys(source: SourceModel, data: Dataset, cfg: TransferConfig) -> RecordKeys:
    from pipeline.model.exporter import library_versions
    from pipeline.model.feature_cache import model_fingerprint
    from pipeline.model.outcome_records import outcome_key

    rows, versions = data_fingerprints(data), library_versions()
    transfer = outcome_key("transfer", model_fingerprint(source.model), source.cut_layer, rows,
                           cfg.model_dump(mode="json", exclude=BASELINE_ONLY), versions)
    try:
        architecture = source.model.to_json()
    except Exception:  # no config to hash: the baseline is trained every time
        return RecordKeys(transfer, None)
    return RecordKeys(transfer, outcome_key("baseline", architecture, source.cut_layer, rows,
                                            cfg.model_dump(mode="json"), versions))


def transfer_outcome(source: SourceModel, data: Dataset, cfg: TransferConfig, reporter: Reporter,
                     cache: Any, keys: RecordKeys | None) -> Any:
    """The transfer arm: trained, or — for lazy rows with a cache — read back from an earlier
    run whose source model (architecture and weights), rows, settings and library versions
    were the same (training is seeded: it would make the same model again)."""
    from pipeline.model import outcome_records
    from pipeline.model.training import transfer

    if cache is None or keys is None:
        return transfer(source.model, source.cut_layer, data, cfg, reporter, cache)
    stored = outcome_records.load_transfer(cache.root, keys.transfer)
    if stored is not None:
        reporter.note(f"transfer: reused an earlier run's trained model (same source model, rows, settings "
                      f"and library versions): held-out accuracy {stored.test_accuracy:.4f}")
        return stored
    outcome = transfer(source.model, source.cut_layer, data, cfg, reporter, cache)
    outcome_records.save_transfer(cache.root, keys.transfer, outcome)
    return outcome


def baseline_outcome(source: SourceModel, data: Dataset, cfg: TransferConfig, reporter: Reporter,
                     cache: Any, keys: RecordKeys | None) -> Any:
    """The from-scratch arm: trained, or — for lazy rows with a cache — read back from an
    earlier run whose architecture, rows, settings and library versions were the same."""
    from pipeline.model import outcome_records
    from pipeline.model.training import train_from_scratch

    if not cfg.baseline:
        return None
    if cache is None or keys is None or keys.baseline is None:
        return train_from_scratch(source.model, source.cut_layer, data, cfg, reporter)
    path = cache.root / f"baseline-{keys.baseline}.json"
    stored = outcome_records.load_baseline(path)
    if stored is not None:
        stored.reused = True
        reporter.note(f"baseline: reused an earlier run's result (same architecture, rows, settings and "
                      f"library versions): held-out accuracy {stored.test_accuracy}")
        return stored
    outcome = train_from_scratch(source.model, source.cut_layer, data, cfg, reporter)
    if outcome.test_accuracy is not None:
        outcome_records.save_baseline(path, outcome)
    return outcome


def labels_digest(y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(y, dtype=np.int64).tobytes()).hexdigest()


def write_heldout(path: Any, x: Any, y: np.ndarray, cache: Any, reporter: Reporter) -> None:
    """heldout.npz in the run folder: lazy rows go through the cache (a re-run links the
    same file instead of decoding every held-out image again)."""
    import os
    import shutil

    from pipeline.model.heldout_file import save_heldout

    if cache is None:
        save_heldout(path, x, y)
        return
    name = f"heldout-{hashlib.sha256((x.fingerprint() + labels_digest(y)).encode()).hexdigest()[:32]}.npz"
    cached = cache.stored(name, lambda target: save_heldout(target, x, y, reporter))
    path.unlink(missing_ok=True)
    try:
        os.link(cached, path)
    except OSError:  # another filesystem
        shutil.copyfile(cached, path)


def run(ctx: StageContext) -> TransferOutput:
    from pipeline.model.feature_cache import FeatureCache

    cfg = ctx.config.transfer
    source = source_from(ctx)
    started = time.perf_counter()
    data = load_target_data(ctx.config.data, tuple(source.model.input_shape[1:]))
    load_s = time.perf_counter() - started
    examples = len(data.y_train) + len(data.y_test)
    lazy = is_lazy(data.x_train)
    ctx.reporter.note(f"target data: {len(data.y_train)} labelled, {len(data.y_test)} held out, "
                      f"{data.num_classes} classes ({', '.join(data.class_names)}); "
                      f"{'indexed' if lazy else 'read'} in {load_s:.1f} s "
                      f"({examples / max(load_s, 1e-9):,.0f} examples/s)")
    conversion = channel_conversion_of(data.x_train, data.x_test)  # from the header pass: no pixel read
    if conversion is not None:
        ctx.reporter.note(f"warning: {conversion.line()}")
    mode, data, heldout_raw = map_inputs(ctx.config.data, data)
    health = check_source_health(source, data, ctx.config.data.preprocess, ctx.reporter)
    cache = FeatureCache(ctx.config.run.workdir / "feature-cache", ctx.reporter) if lazy else None
    keys = None if cache is None else record_keys(source, data, cfg)
    outcome = transfer_outcome(source, data, cfg, ctx.reporter, cache, keys)
    baseline = baseline_outcome(source, data, cfg, ctx.reporter, cache, keys)
    if mode != "none":  # the exported model takes raw pixels: the mapping is its first layer
        from pipeline.model.preprocess_layer import with_preprocess

        outcome.model = with_preprocess(outcome.model, mode)
    report: dict[str, Any] = {
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "cache_features": cfg.cache_features,
        "labelled_examples": int(len(data.y_train)),
        "data": {"source": ctx.config.data.source, "examples": int(examples), "load_s": round(load_s, 3),
                 "examples_per_s": round(examples / max(load_s, 1e-9), 1),
                 "streamed": lazy,
                 "decoded_bytes": 0 if lazy else int(data.x_train.nbytes + data.x_test.nbytes),
                 "channel_conversion": None if conversion is None else conversion.to_json(),
                 "warnings": [] if conversion is None else [conversion.line()]},
        "test_examples": int(len(data.y_test)),
        "classes": list(data.class_names),
        "unfrozen_layers": outcome.unfrozen,
        "source_health": health.to_json(),
        "preprocess": {"setting": ctx.config.data.preprocess, "mode": mode,
                       "signature_takes": "loader scale" if mode == "none" else "raw pixels 0-255"},
        "transfer": {
            "test_accuracy": outcome.test_accuracy,
            "wall_s": round(outcome.wall_s, 3),
            "reused": outcome.reused,
            "phases": {name: {"epochs_run": p.epochs_run, "wall_s": round(p.wall_s, 3),
                              **({"cached_below": p.cached_below} if p.cached_below else {})}
                       for name, p in outcome.phases.items()},
            "augmentation": outcome.augmentation,
        },
        "baseline": None if baseline is None else {
            "test_accuracy": baseline.test_accuracy,
            "epochs_run": baseline.epochs_run,
            "examples": baseline.examples,
            "capped_from": baseline.capped_from,
            "wall_s": round(baseline.wall_s, 3),
            "skipped_reason": baseline.skipped_reason,
            "reused": baseline.reused,
            "augmented": baseline.augmented,
            "batchnorm": None if not baseline.bn_layers_recalibrated else {
                "layers_recalibrated": baseline.bn_layers_recalibrated,
                "accuracy_before": baseline.accuracy_before_recalibration,
                "how": "moving mean/variance re-estimated after training: one training-mode pass over "
                       "the labelled examples, averaging the per-batch statistics",
            },
        },
    }
    if baseline is not None and baseline.test_accuracy is not None:
        report["accuracy_gain"] = outcome.test_accuracy - baseline.test_accuracy
    workdir = ctx.workdir
    report.update(speed_report(outcome, baseline, workdir))
    model_path = workdir / "transferred.keras"
    outcome.model.save(model_path)
    heldout_path = workdir / "heldout.npz"
    write_heldout(heldout_path, heldout_raw, data.y_test, cache, ctx.reporter)  # what the saved model takes
    if cache is not None:
        report["feature_cache"] = {"path": str(cache.root.resolve()), **cache.stats.to_json()}
    report_path = workdir / "transfer_report.json"
    report_path.write_text(json.dumps(report, indent=2))
    ctx.transferred_model = outcome.model
    line = f"held-out accuracy: transfer {outcome.test_accuracy:.3f}"
    if baseline is not None and baseline.test_accuracy is not None:
        line += f" vs from scratch {baseline.test_accuracy:.3f}"
    ctx.reporter.note(line)
    return TransferOutput(model_path=model_path.resolve(), heldout=heldout_path.resolve(),
                          report=report_path.resolve(), classes=list(data.class_names), strategy=cfg.strategy,
                          test_accuracy=outcome.test_accuracy,
                          baseline_accuracy=None if baseline is None else baseline.test_accuracy,
                          preprocess=mode)
