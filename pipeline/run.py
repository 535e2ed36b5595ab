"""The ordered stage list, the run record, and resume.

A stage is a module `pipeline.stages.<name>` with `run(ctx) -> <Name>Output`, a typed
result from `pipeline.results`. Results are saved in the run record
(`<workdir>/run.json`) after every stage and validated back into their classes when
read, so a later command — `--from STAGE`, a single-stage sub-command, or a re-run
after a failure — can pick up where the previous one stopped without redoing
finished work, and reads attributes, never another stage's dict keys.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from pipeline.config import DeployConfig
from pipeline.errors import (
    FileSystemError,
    GateError,
    StageOrderError,
    TfRolloutError,
    describe_os_error,
)
from pipeline.progress import Reporter
from pipeline.results import OUTPUT_TYPES, ExportOutput, StageOutput

STAGE_ORDER: tuple[str, ...] = ("load", "transfer", "gate", "export", "push", "rollout", "verify")
RECORD_FILE = "run.json"
OutputT = TypeVar("OutputT", bound=StageOutput)


def config_fingerprint(config: DeployConfig) -> str:
    """Stable hash of the resolved config: a resumed run must use the same settings."""
    payload = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class StageResult:
    """What one stage did: status, wall time, outputs or the error line."""

    status: str  # "ok" | "failed"
    started_at: str
    duration_s: float
    output: StageOutput | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "started_at": self.started_at,
                "duration_s": round(self.duration_s, 3),
                "outputs": self.output.model_dump(mode="json") if self.output is not None else {},
                "error": self.error}

    @classmethod
    def from_json(cls, stage: str, data: dict[str, Any]) -> StageResult:
        """Validate the stored outputs back into the stage's result class (ValueError if they don't fit)."""
        raw = data.get("outputs") or None
        output = OUTPUT_TYPES[stage].model_validate(raw) if raw is not None and data["status"] == "ok" else None
        return cls(status=data["status"], started_at=data["started_at"], duration_s=data["duration_s"],
                   output=output, error=data.get("error"))


@dataclass
class RunRecord:
    """Persistent record of one run: which stages finished and what they produced."""

    run_id: str
    config_hash: str
    stages: dict[str, StageResult] = field(default_factory=dict)

    def first_unfinished(self, stages: list[str]) -> str | None:
        """The first of `stages` without a successful result (None: all done)."""
        for name in stages:
            result = self.stages.get(name)
            if result is None or result.status != "ok":
                return name
        return None

    def find(self, kind: type[OutputT]) -> OutputT | None:
        """The result of a finished stage, or None when it has not run successfully."""
        result = self.stages.get(kind.stage)
        if result is None or result.status != "ok" or not isinstance(result.output, kind):
            return None
        return result.output

    def output(self, kind: type[OutputT]) -> OutputT:
        """The result of a finished stage; a clear error when it has not run."""
        found = self.find(kind)
        if found is None:
            raise StageOrderError(
                f"stage {kind.stage!r} has no successful result in this run; run it first "
                f"(e.g. `tfrollout deploy --until {kind.stage}`)"
            )
        return found

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "config_hash": self.config_hash,
                "stages": {name: res.to_json() for name, res in self.stages.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        stages = {name: StageResult.from_json(name, s) for name, s in data.get("stages", {}).items()}
        return cls(run_id=data["run_id"], config_hash=data["config_hash"], stages=stages)

    @classmethod
    def new(cls, config: DeployConfig) -> RunRecord:
        return cls(run_id=uuid.uuid4().hex[:12], config_hash=config_fingerprint(config))


def record_path(config: DeployConfig) -> Path:
    return config.run.workdir / RECORD_FILE


def load_record(config: DeployConfig) -> RunRecord | None:
    path = record_path(config)
    if not path.is_file():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, ValidationError):
        # An unreadable record (or one written by an older release with other result
        # fields) is treated as no record: start a fresh run.
        return None


def last_export(config: DeployConfig, model: str | None = None,
                version: int | None = None) -> ExportOutput | None:
    """The last run's successful export, if it is `model` (and `version`) when those are given."""
    record = load_record(config)
    export = record.find(ExportOutput) if record else None
    if export is None or (model is not None and export.model_name != model) or (
            version is not None and export.version != version):
        return None
    return export


def save_record(config: DeployConfig, record: RunRecord) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a record."""
    path = record_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    from pipeline.redaction import redacted

    tmp.write_text(json.dumps(redacted(record.to_json()), indent=2))  # CI keeps records as artifacts
    os.replace(tmp, path)


@dataclass
class StageContext:
    """Everything a stage may use: config, earlier results, reporter, models kept in memory.

    `source_model` / `transferred_model` spare the next stage a reload from disk when
    both run in one process; a resumed run reloads them from the paths in the results.
    """

    config: DeployConfig
    record: RunRecord
    reporter: Reporter
    source_model: Any = None  # pipeline.model.source.SourceModel (TensorFlow-typed: kept loose here)
    transferred_model: Any = None  # a keras.Model
    until_stage: str | None = None  # the last stage this invocation runs (None: through the last one; see `reaches`)

    @property
    def workdir(self) -> Path:
        """This run's scratch directory (created on first use)."""
        path = self.config.run.workdir / "runs" / self.record.run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output(self, kind: type[OutputT]) -> OutputT:
        """An earlier stage's typed result (StageOrderError when it has not run)."""
        return self.record.output(kind)


def reaches(until_stage: str | None, stage: str) -> bool:
    """Does a run that stops after `until_stage` (None: the last stage) include `stage`? (pure)"""
    return until_stage is None or STAGE_ORDER.index(until_stage) >= STAGE_ORDER.index(stage)


def select_stages(from_stage: str | None, until_stage: str | None) -> list[str]:
    """The slice of STAGE_ORDER between `from_stage` and `until_stage`, inclusive."""
    for name in (from_stage, until_stage):
        if name is not None and name not in STAGE_ORDER:
            raise StageOrderError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_ORDER)}")
    start = STAGE_ORDER.index(from_stage) if from_stage else 0
    stop = STAGE_ORDER.index(until_stage) if until_stage else len(STAGE_ORDER) - 1
    if start > stop:
        raise StageOrderError(f"--from {from_stage} comes after --until {until_stage}")
    return list(STAGE_ORDER[start : stop + 1])


def plan_run(
    previous: RunRecord | None, config: DeployConfig, from_stage: str | None, fresh: bool,
    until_stage: str | None = None,
) -> tuple[RunRecord, str | None]:
    """Decide which record to continue and where to start (pure).

    - `--from S` reuses the previous record's earlier outputs and restarts at S.
    - A previous run with the same config that has not finished the requested stages
      (up to `until_stage`) resumes at its first unfinished one: re-running after a
      crash, or running `deploy` after `deploy --until export`, redoes no finished work.
    - Otherwise (finished, different config, or `fresh`) a new run starts.
    """
    fingerprint = config_fingerprint(config)
    if from_stage is not None:
        if previous is None:
            if from_stage != STAGE_ORDER[0]:
                raise StageOrderError(f"--from {from_stage}: no earlier run record to start from")
            return RunRecord.new(config), from_stage
        for name in list(previous.stages):
            if STAGE_ORDER.index(name) >= STAGE_ORDER.index(from_stage):
                del previous.stages[name]
        return previous, from_stage
    if not fresh and previous is not None and previous.config_hash == fingerprint and previous.stages:
        start = previous.first_unfinished(select_stages(None, until_stage))
        if start is not None:
            for name in STAGE_ORDER[STAGE_ORDER.index(start):]:
                previous.stages.pop(name, None)
            return previous, start
    return RunRecord.new(config), None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_stage(ctx: StageContext, name: str) -> StageResult:
    """Run one stage, timing it and recording success or the one-line failure."""
    module = importlib.import_module(f"pipeline.stages.{name}")
    ctx.reporter.stage(name)
    started, t0 = _now(), time.perf_counter()
    try:
        try:
            output = module.run(ctx)
        except OSError as exc:  # disk full / permissions in any stage: one line naming the file
            raise FileSystemError(describe_os_error(exc, f"{name} stage")) from None
    except TfRolloutError as exc:
        ctx.record.stages[name] = StageResult("failed", started, time.perf_counter() - t0, error=str(exc))
        save_record(ctx.config, ctx.record)
        raise
    if not isinstance(output, OUTPUT_TYPES[name]):
        raise TypeError(f"stage {name!r} returned {type(output).__name__}, not {OUTPUT_TYPES[name].__name__}")
    result = StageResult("ok", started, time.perf_counter() - t0, output=output)
    ctx.record.stages[name] = result
    save_record(ctx.config, ctx.record)
    return result


@dataclass
class RunSummary:
    """The machine-readable result of a deploy invocation."""

    record: RunRecord
    ran: list[str]
    resumed_from: str | None

    def to_json(self) -> dict[str, Any]:
        return {"ok": all(self.record.stages[s].status == "ok" for s in self.ran),
                "ran": self.ran, "resumed_from": self.resumed_from, **self.record.to_json()}


def run_pipeline(
    config: DeployConfig,
    reporter: Reporter,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    fresh: bool = False,
) -> RunSummary:
    """Run the selected stages in order, persisting the record after each one."""
    select_stages(from_stage, until_stage)  # validate names before touching anything
    record, start = plan_run(load_record(config), config, from_stage, fresh, until_stage)
    if start is not None and from_stage is None:
        reporter.note(f"resuming run {record.run_id} at stage {start!r}")
    stages = select_stages(start, until_stage)
    ctx = StageContext(config=config, record=record, reporter=reporter, until_stage=until_stage)
    for name in stages:
        try:
            run_stage(ctx, name)
        except TfRolloutError as exc:  # the --json error report carries what the run did so far
            if exc.details is None:
                exc.details = record.to_json()
            elif isinstance(exc, GateError):  # the gate's evaluation next to the run record
                exc.details = {**record.to_json(), **exc.details}
            raise
    return RunSummary(record=record, ran=stages, resumed_from=start if from_stage is None else None)
