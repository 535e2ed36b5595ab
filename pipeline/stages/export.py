"""export stage: the transferred model as `<export_root>/<name>/<version>/` for TF Serving.

The version number comes from the store (see `pipeline.storage.reserve`), not only from
the local export folder, and is reserved there before anything is written: two fresh
checkouts exporting against one store get two numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import ExportError, GateError, StorageError
from pipeline.results import ExportOutput, GateOutput, LoadOutput, TransferOutput
from pipeline.run import StageContext
from pipeline.storage import Store
from pipeline.storage.errors import MissingBucketError
from pipeline.storage.reserve import (
    Reservation,
    read_reservation,
    release_quietly,
    reserve,
    reserve_next,
    taken_numbers,
)
from pipeline.storage.versions import (
    choose_version,
    existing_versions,
    next_version,
    refuse_committed_pin,
)


@dataclass
class VersionClaim:
    """The number this export writes, and its reservation in the store (None: not reserved)."""

    version: int
    store: Store | None = None
    reservation: Reservation | None = None

    def release(self, model: str) -> None:
        """Give the number back after a failed export (a leftover goes stale and gc removes it)."""
        if self.store is not None and self.reservation is not None:
            release_quietly(self.store, model, self.version, self.reservation)

    def describe(self) -> str:
        if self.store is None:
            return "numbered from the local export folder"
        verb = "reserved" if self.reservation is not None else "numbered (no reservation: storage.push_lock off)"
        return f"{verb} in {self.store.uri}"


def claim_version(config: DeployConfig, run_id: str) -> VersionClaim:
    """The next free (or the pinned) version, checked against the local folder and the store.

    Fails closed: a store that does not answer stops the export with one line, unless
    `export.version_from_store = false`.
    """
    from pipeline.storage import open_store

    cfg, storage = config.export, config.storage
    model_dir = cfg.root / cfg.model_name
    local = existing_versions(model_dir)
    pinned = cfg.version
    if pinned is not None:
        choose_version(local, pinned, model_dir)  # a local directory of that number: refused first
    if not cfg.version_from_store:
        return VersionClaim(choose_version(local, pinned, model_dir))
    try:
        store = open_store(storage)
        try:
            return _claim(store, config, pinned, local, run_id)
        except MissingBucketError:
            if not storage.create_bucket:
                raise
            store.ensure_ready(create=True)  # the push would create it: the export may, to reserve in it
            return _claim(store, config, pinned, local, run_id)
    except StorageError as exc:
        raise StorageError(f"export cannot number {cfg.model_name} from the store {storage.uri}: {exc}; "
                           f"nothing was exported — fix the store, or set "
                           f"export.version_from_store = false to number from the local export folder only"
                           ) from None


def _claim(store: Store, config: DeployConfig, pinned: int | None, local: list[int], run_id: str) -> VersionClaim:
    storage, model = config.storage, config.export.model_name
    if pinned is not None:
        return _claim_pinned(store, config, pinned, local, run_id)
    if storage.push_lock:
        version, holder = reserve_next(store, model, local=local, run_id=run_id,
                                       stale_after_s=storage.reservation_stale_s)
        return VersionClaim(version, store, holder)
    return VersionClaim(next_version(taken_numbers(store, model).all(), local), store)


def _claim_pinned(store: Store, config: DeployConfig, pinned: int, local: list[int],
                  run_id: str) -> VersionClaim:
    """A pinned number: refused when committed or reserved by another live export, else reserved."""
    cfg, storage = config.export, config.storage
    taken = taken_numbers(store, cfg.model_name)
    committed = [v.version for v in store.list_versions(cfg.model_name, pinned) if v.committed]
    refuse_committed_pin(cfg.model_name, pinned, committed, store.uri, next_version(taken.all(), local))
    if not storage.push_lock:
        return VersionClaim(pinned, store)
    holder = reserve(store, cfg.model_name, pinned, run_id=run_id, stale_after_s=storage.reservation_stale_s)
    if holder is None:
        found = read_reservation(store, cfg.model_name, pinned)
        who = found[0].owner if found is not None and found[0] is not None else "another export"
        raise ExportError(f"{cfg.model_name} version {pinned} is reserved in {store.uri} by another export "
                          f"({who}); omit export.version / --version and the export takes the next free "
                          f"number ({next_version(taken.all(), local)})")
    return VersionClaim(pinned, store, holder)


def quantization_line(q: dict[str, Any]) -> str:
    """One line of the quantization report (pure)."""
    size = q["variables_bytes"]
    acc = q.get("accuracy") or {}
    lat = q["latency_in_process"]
    return (f"quantized {q['mode']}: weights {size['float32'] / 1e6:.2f} MB -> {size['quantized'] / 1e6:.2f} MB, "
            f"held-out accuracy {acc.get('float32', float('nan')):.3f} -> {acc.get('quantized', float('nan')):.3f}, "
            f"batch-1 {lat['batch1']['float32_ms']:.2f} -> {lat['batch1']['quantized_ms']:.2f} ms, "
            f"batch-64 {lat['batch64']['float32_ms']:.2f} -> {lat['batch64']['quantized_ms']:.2f} ms "
            f"({len(q['layers_changed'])} layers changed)")


def check_quantization(ctx: StageContext, report: dict[str, Any]) -> None:
    """gate.max_quantization_drop: fail closed (an accuracy that could not be measured fails)."""
    limit = ctx.config.gate.max_quantization_drop
    if limit is None:
        return
    drop = (report.get("accuracy") or {}).get("drop")
    ok = isinstance(drop, (int, float)) and math.isfinite(drop) and drop <= limit
    if ok:
        return
    why = (f"quantized ({report['mode']}) held-out accuracy dropped by {drop:.3f} > max_quantization_drop "
           f"{limit:g}" if isinstance(drop, (int, float)) and math.isfinite(drop)
           else f"the quantized ({report['mode']}) model's held-out accuracy could not be measured")
    if ctx.config.gate.enforce:
        raise GateError(f"quality gate failed: {why}; nothing is exported (export.quantize = \"none\" "
                        "keeps float32, or raise gate.max_quantization_drop)")
    ctx.reporter.note(f"{why} — exported anyway (gate.enforce = false)")
    report["gate_overridden"] = True


def run(ctx: StageContext) -> ExportOutput:
    import keras  # TensorFlow: only when the stage runs

    from pipeline.model.exporter import GOLDEN_FILE, MANIFEST_FILE, ExportSpec, export_model

    cfg = ctx.config.export
    transferred = ctx.output(TransferOutput)
    loaded = ctx.output(LoadOutput)
    import pipeline.model.preprocess_layer  # noqa: F401 - registers the PixelPreprocess layer
    import pipeline.model.saved_model_base  # noqa: F401 - registers the SignatureFeatures layer

    model = ctx.transferred_model or keras.models.load_model(transferred.model_path)
    from pipeline.model.heldout_file import open_heldout

    heldout_x, heldout_y = open_heldout(transferred.heldout)  # rows read batch by batch
    gate = ctx.output(GateOutput)  # nothing is exported that the quality gate did not see
    if not gate.passed and ctx.config.gate.enforce:
        raise GateError("the quality gate failed for this run's model and gate.enforce is true; "
                        "nothing is exported (re-run the gate, or set gate.enforce = false)")
    claim = claim_version(ctx.config, ctx.record.run_id)
    ctx.reporter.note(f"{cfg.model_name} version {claim.version} {claim.describe()}")
    spec = ExportSpec(root=cfg.root, model_name=cfg.model_name, version=claim.version,
                      input_name=cfg.input_name, output_name=cfg.output_name,
                      warmup_records=cfg.warmup_records, golden_size=cfg.golden_size,
                      parity_atol=cfg.parity_atol)
    metadata = {
        "source_model": {"path": str(loaded.path), "format": loaded.format, "sha256": loaded.sha256,
                         "cut_layer": loaded.cut_layer},
        "classes": transferred.classes,
        "preprocess": {"mode": transferred.preprocess,
                       "inputs": "as the data loaders scale them" if transferred.preprocess == "none"
                       else "raw pixels 0-255 (the mapping is the model's first layer)"},
        "metrics": {"test_accuracy": transferred.test_accuracy,
                    "baseline_test_accuracy": transferred.baseline_accuracy,
                    "strategy": transferred.strategy},
        "run_id": ctx.record.run_id,  # the push recognises the reservation of this run as its own
        "quality_gate": {"passed": gate.passed, "enforced": gate.enforced, "overridden": gate.overridden,
                         "accuracy": gate.accuracy, "serving_accuracy": gate.serving_accuracy,
                         "serving_version": gate.serving_version, "serving_note": gate.serving_note,
                         "checks": gate.checks,  # a deferred comparison travels with the version:
                         "serving_deferred": None if gate.serving_deferred is None  # every rollout owes it
                         else gate.serving_deferred.model_dump()},
    }
    try:
        result = export_model(model, spec, heldout_x, metadata, quantize=cfg.quantize, heldout_y=heldout_y,
                              check_quantized=lambda report: check_quantization(ctx, report))
    except BaseException:
        claim.release(cfg.model_name)
        raise
    if cfg.quantize != "none":
        q = json.loads((result.version_dir / MANIFEST_FILE).read_text())["quantization"]
        ctx.reporter.note(quantization_line(q))
    ctx.reporter.note(f"exported {cfg.model_name} version {result.version} to {result.version_dir} "
                      f"(parity max abs diff {result.max_abs_diff:.2g})")
    version_dir = result.version_dir.resolve()
    return ExportOutput(model_name=cfg.model_name, version=result.version, version_dir=version_dir,
                        export_root=cfg.root.resolve(), manifest=version_dir / MANIFEST_FILE,
                        golden=version_dir / GOLDEN_FILE, signature=result.signature,
                        parity_max_abs_diff=result.max_abs_diff)
