"""Typed stage results for tests that start mid-pipeline (no training): every field filled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.results import ExportOutput, PushOutput
from pipeline.run import StageResult


def export_output(version_dir: Path, *, model_name: str = "digits", version: int | None = None,
                  golden: Path | None = None, **overrides: Any) -> ExportOutput:
    """The export stage's result for an existing (or imagined) `<root>/<model>/<version>` dir."""
    fields: dict[str, Any] = {
        "model_name": model_name, "version": int(version_dir.name) if version is None else version,
        "version_dir": version_dir, "export_root": version_dir.parent.parent,
        "manifest": version_dir / "tfrollout.json",
        "golden": golden or version_dir / "assets.extra" / "tfrollout_golden.npz",
        "signature": {}, "parity_max_abs_diff": 0.0}
    return ExportOutput(**{**fields, **overrides})


def push_output(model_name: str, version: int, uri: str = "file://store") -> PushOutput:
    """A push stage result for a version assumed committed."""
    return PushOutput(uri=uri, manifest_uri=uri, model_name=model_name, version=version, total_bytes=0,
                      bytes_uploaded=0, bytes_skipped=0, files_uploaded=0, files_skipped=0,
                      files_deleted=0, already_committed=True, duration_s=0.0, throughput_mb_s=0.0)


def finished(output: Any) -> StageResult:
    """A successful StageResult holding `output`."""
    return StageResult("ok", "2025-01-01T00:00:00+00:00", 0.0, output=output)


def sample_output(stage: str) -> Any:
    """A valid result of any stage (values made up; for record and summary tests)."""
    from pipeline.results import (
        GateOutput,
        LoadOutput,
        RolloutOutput,
        TransferOutput,
        VerifyOutput,
    )

    here = Path("/tmp/run")
    samples: dict[str, Any] = {
        "load": LoadOutput(path=here / "m.keras", format="keras", sha256="0" * 64, input_shape=[8, 8, 1],
                           cut_layer="features", feature_shape=[32], num_layers=7),
        "transfer": TransferOutput(model_path=here / "t.keras", heldout=here / "h.npz", report=here / "r.json",
                                   classes=["5", "6"], strategy="fine-tune", test_accuracy=0.9,
                                   baseline_accuracy=None),
        "gate": GateOutput(passed=True, enforced=True, accuracy=0.9, serving_accuracy=None, serving_version=None,
                           serving_note="nothing is served yet", checks=[], report=here / "gate.json"),
        "export": export_output(here / "exports" / "digits" / "1"),
        "push": push_output("digits", 1),
        "rollout": RolloutOutput(target="local", endpoint="127.0.0.1:8500", model_name="digits", version=1,
                                 previous=None, action="first-deploy", stable_label="stable", served=None,
                                 timings_s={"promoted": 0.3}, report=here / "rollout.json"),
        "verify": VerifyOutput(report=here / "verify.json", max_abs_diff=0.0, agreement=1.0,
                               latency_ms={"p50": 1.0}, served_versions=[1]),
    }
    return samples[stage]
