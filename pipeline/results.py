"""Typed stage results: what each stage hands to the next, stored in and reloaded from the run record.

A stage returns one of these; the run record saves it as JSON and validates it back into
the same class, so a later stage (or command) reads attributes, never dict keys. A
renamed field fails when the record is read, naming the stage — not later, in another
stage, as a KeyError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class StageOutput(BaseModel):
    """Base class: `stage` names the stage that produces it; `highlights` feed the summary table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stage: ClassVar[str] = ""
    summary_fields: ClassVar[tuple[str, ...]] = ()

    def highlights(self) -> dict[str, Any]:
        """The few values worth a glance in the end-of-run table (the JSON report has all)."""
        return {name: getattr(self, name) for name in self.summary_fields}


class LoadOutput(StageOutput):
    """The source model as the load stage found it."""

    stage: ClassVar[str] = "load"
    summary_fields: ClassVar[tuple[str, ...]] = ("format", "cut_layer")

    path: Path
    format: str
    sha256: str
    input_shape: list[int | None]
    cut_layer: str | None
    feature_shape: list[int | None]
    num_layers: int


class TransferOutput(StageOutput):
    """Where the transferred model, the held-out split and the transfer report were written."""

    stage: ClassVar[str] = "transfer"
    summary_fields: ClassVar[tuple[str, ...]] = ("test_accuracy", "baseline_accuracy")

    model_path: Path
    heldout: Path
    report: Path
    classes: list[str]
    strategy: str
    test_accuracy: float
    baseline_accuracy: float | None
    preprocess: str = "none"  # the resolved data.preprocess mode the saved model carries


class DeferredComparison(BaseModel):
    """A comparison with serving the gate left to the rollout stage (the run stopped before rollout):
    run there on the held-out set, against whatever is stable then, before anything is promoted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str  # "deferred: the run stops before rollout ..."
    max_drop_vs_serving: float  # the bar at the gate (a stricter one at rollout applies instead)


class GateOutput(StageOutput):
    """The quality gate's verdict on the transferred model (and what it was compared with)."""

    stage: ClassVar[str] = "gate"
    summary_fields: ClassVar[tuple[str, ...]] = ("passed", "accuracy", "serving_accuracy")

    passed: bool  # every configured check passed
    enforced: bool  # gate.enforce at the time: a failure with enforce=false is an override
    accuracy: float
    serving_accuracy: float | None  # the served stable version on the same held-out set
    serving_version: int | None
    serving_note: str | None  # why the serving comparison was skipped (or deferred)
    checks: list[dict[str, Any]]
    report: Path
    serving_deferred: DeferredComparison | None = None  # owed by the rollout stage before it promotes

    @property
    def overridden(self) -> bool:
        return self.enforced is False and not self.passed


class ExportOutput(StageOutput):
    """One exported version: `<export_root>/<model_name>/<version>/`."""

    stage: ClassVar[str] = "export"
    summary_fields: ClassVar[tuple[str, ...]] = ("version_dir",)

    model_name: str
    version: int
    version_dir: Path
    export_root: Path
    manifest: Path
    golden: Path
    signature: dict[str, Any]
    parity_max_abs_diff: float


class PushOutput(StageOutput):
    """A version committed to the store (the storage layer's push report)."""

    stage: ClassVar[str] = "push"
    summary_fields: ClassVar[tuple[str, ...]] = ("uri", "bytes_uploaded")

    uri: str
    manifest_uri: str
    model_name: str
    version: int
    total_bytes: int
    bytes_uploaded: int
    bytes_skipped: int
    files_uploaded: int
    files_skipped: int
    files_deleted: int
    already_committed: bool
    duration_s: float
    throughput_mb_s: float


class RolloutOutput(StageOutput):
    """A version live under the stable label on a serving target."""

    stage: ClassVar[str] = "rollout"
    summary_fields: ClassVar[tuple[str, ...]] = ("action", "version", "endpoint")

    target: str
    endpoint: str
    model_name: str
    version: int
    previous: int | None
    action: str
    stable_label: str
    served: dict[str, Any] | None
    timings_s: dict[str, float]
    report: Path
    cleanup_pending: str | None = None  # promoted; clean-up after it still failed (the next command retries)
    serving_check: dict[str, Any] | None = None  # the gate's deferred comparison with serving, run first


class VerifyOutput(StageOutput):
    """The served model answered the golden set like the exported one."""

    stage: ClassVar[str] = "verify"
    summary_fields: ClassVar[tuple[str, ...]] = ("max_abs_diff", "served_versions")

    report: Path
    max_abs_diff: float
    agreement: float | None
    latency_ms: dict[str, float | None]
    served_versions: list[int]


OUTPUT_TYPES: dict[str, type[StageOutput]] = {
    cls.stage: cls
    for cls in (LoadOutput, TransferOutput, GateOutput, ExportOutput, PushOutput, RolloutOutput, VerifyOutput)
}
