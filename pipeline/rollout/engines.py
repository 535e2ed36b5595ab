"""One rollout interface, two engines: what the stage and the commands call, whatever the target.

- `ConfigReloadEngine`: one runtime driven through its ModelService (local process,
  Docker container): `rollout.machine.Machine` over a `ServingHost`.
- `SwarmRollout`: a replicated service whose spec is rolled by swarm
  (`rollout.swarm_engine.SwarmEngine`).

`open_engine(cfg)` is the one place that picks an engine (by the kind of target it opens). Each engine returns a
`RolloutResult` (the typed fields callers read, plus the engine's full report for the
JSON output, unchanged) or raises `EngineFailed` carrying that report.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from pipeline.config import DeployConfig
from pipeline.errors import RolloutError
from pipeline.results import ExportOutput
from pipeline.storage import Store
from pipeline.targets.base import ReloadableTarget

if TYPE_CHECKING:
    from pipeline.targets.swarm import SwarmTarget


@dataclass(frozen=True)
class RolloutResult:
    """What a rollout or rollback did, as every engine reports it."""

    ok: bool
    action: str
    model: str
    version: int | None
    previous: int | None
    served: dict[str, Any] | None
    timings_s: dict[str, float]
    cleanup_pending: str | None
    report: dict[str, Any]  # the engine's full report (`--json`, rollout.json)
    lines: tuple[str, ...]  # what `tfrollout rollout|rollback` prints
    warnings: tuple[str, ...]  # ... on stderr
    stage_notes: tuple[str, ...]  # what the deploy's rollout stage notes once it is done

    def to_json(self) -> dict[str, Any]:
        return self.report


class EngineFailed(RolloutError):
    """A rollout failed and was undone (or left the previous version serving); carries the report."""

    def __init__(self, message: str, report: dict[str, Any], *, report_hint: str = "report") -> None:
        super().__init__(message)
        self.report = report
        self.details = report
        self.report_hint = report_hint  # how the stage names rollout.json in its error line


class RolloutEngine(Protocol):
    """Rollout, rollback and owed clean-up of one model on the configured target."""

    kind: str
    endpoint: str

    def describe_rollout(self, model: str, version: int) -> str: ...
    def rollout(self, model: str, version: int, *, store: Store | None, golden: Path | None,
                verify: bool = True) -> RolloutResult: ...
    def rollback(self, model: str, *, verify: bool = True) -> RolloutResult: ...
    def finish_clean_up(self, model: str) -> str | None: ...


def open_engine(cfg: DeployConfig, *, last: ExportOutput | None = None) -> RolloutEngine:
    """The engine for `rollout.target` (`last`: the last run's export, for golden sets on disk)."""
    from pipeline.targets import open_target

    target = open_target(cfg.rollout, cfg.run.workdir)
    if isinstance(target, ReloadableTarget):
        return ConfigReloadEngine(cfg, target, last)
    return SwarmRollout(cfg, cast("SwarmTarget", target), last)  # the one target rolled by its spec


# ------------------------------------------------------------------ config reload
def _reload_result(report: dict[str, Any], stable: str, endpoint: str) -> RolloutResult:
    action, note, pending = str(report.get("action") or ""), report.get("note"), report.get("cleanup_pending")
    served = report.get("served") or {}
    if action == "none":
        lines: tuple[str, ...] = (str(note or "nothing to do"),)
    else:
        lines = (f"{action}: {report.get('model')} stable -> {served.get('labels', {})} "
                 f"loaded {served.get('versions')} ({report.get('timings_s')})",) + ((f"note: {note}",) if note else ())
    warnings = (f"warning: promoted, clean-up pending: {pending} (the next rollout, rollback or status "
                "finishes it)",) if pending and action != "none" else ()
    stage: tuple[str, ...] = (f"{action}: {report.get('model')} v{report.get('version')} is '{stable}' at {endpoint} "
             f"(timings {report.get('timings_s')})",)
    if pending:
        stage += (f"warning: promoted, clean-up pending ({pending}); the next rollout, rollback or status "
                  "finishes it",)
    return RolloutResult(ok=bool(report.get("ok")), action=action, model=str(report.get("model")),
                         version=report.get("version"), previous=report.get("previous"),
                         served=report.get("served"), timings_s=dict(report.get("timings_s") or {}),
                         cleanup_pending=pending, report=report, lines=lines, warnings=warnings,
                         stage_notes=stage)


class ConfigReloadEngine:
    """One runtime, changed by reloading its model config (canary label, verify, promote)."""

    def __init__(self, cfg: DeployConfig, target: ReloadableTarget, last: ExportOutput | None) -> None:
        self.cfg, self.target, self.last = cfg, target, last
        self.kind, self.endpoint = self.target.kind, self.target.endpoint

    def describe_rollout(self, model: str, version: int) -> str:
        return f"rolling out {model} v{version} to the {self.kind} target at {self.endpoint}"

    def rollout(self, model: str, version: int, *, store: Store | None, golden: Path | None,
                verify: bool = True) -> RolloutResult:
        """`version` must be committed (the caller checked); `store`: where versions are pulled from
        (None: passthrough, the runtime reads the store itself)."""
        from pipeline.rollout.machine import RolloutFailed
        from pipeline.rollout.session import golden_for, open_session

        with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
            if golden is None and verify and self.cfg.rollout.verify_canary and store is not None:
                golden = golden_for(store, model, version, Path(scratch), self.last)
            session = open_session(self.cfg, model, store=store, golden=golden if verify else None)
            try:
                report = session.machine.rollout(model, version)
            except RolloutFailed as exc:
                raise EngineFailed(str(exc), exc.report.to_json(),
                                   report_hint="report with runtime logs") from None
            finally:
                session.close()
        return _reload_result(report.to_json(), self.cfg.rollout.stable_label, self.endpoint)

    def rollback(self, model: str, *, verify: bool = True) -> RolloutResult:
        from pipeline.rollout.reload_rollback import rollback_model

        return _reload_result(rollback_model(self.cfg, model, verify=verify, last=self.last),
                              self.cfg.rollout.stable_label, self.endpoint)

    def finish_clean_up(self, model: str) -> str | None:
        from pipeline.rollout.pending import PendingCleanup
        from pipeline.rollout.session import open_session

        if PendingCleanup(self.cfg.run.workdir).load(model) is None:
            return None
        try:
            session = open_session(self.cfg, model, store=None)
        except Exception as exc:  # noqa: BLE001 - status still reports what it can
            return f"clean-up pending, not finished now: {exc}"
        try:
            return session.machine.finish_clean_up(model)
        finally:
            session.close()


# ------------------------------------------------------------------ swarm
def _swarm_result(report: dict[str, Any], stable: str) -> RolloutResult:
    action, pending = str(report.get("action") or ""), report.get("cleanup_pending")
    replicas = report.get("replicas") or []
    version = report.get("version")
    timings = {"total": report.get("duration_s", 0.0)}
    if report.get("canary"):
        timings["canary"] = report["canary"]["duration_s"]
    served = {"model": report.get("model"), "versions": sorted({r["version"] for r in replicas}),
              "labels": {stable: version}, "replicas": len(replicas)}
    if action == "none":
        lines: tuple[str, ...] = (str(report.get("note") or "nothing to do"),)
    else:
        lines = (f"{action}: {report.get('model')} v{version} on {len(replicas)} replica(s) of "
                 f"{report.get('service')} in {report.get('duration_s', 0.0):.1f} s",)
    warnings = (f"warning: promoted, clean-up pending: {pending}",) if pending and action != "none" else ()
    stage: tuple[str, ...] = (f"{action}: {report.get('model')} v{version} is '{stable}' on {len(replicas)} replica(s) "
             f"in {report.get('duration_s', 0.0):.1f} s",)
    if pending:
        stage += (f"warning: promoted, clean-up pending: {pending}",)
    return RolloutResult(ok=bool(report.get("ok")), action=action, model=str(report.get("model")),
                         version=version, previous=report.get("previous"), served=served, timings_s=timings,
                         cleanup_pending=pending, report=report, lines=lines, warnings=warnings,
                         stage_notes=stage)


class SwarmRollout:
    """A replicated swarm service: the spec pins the version, a one-replica canary is checked first."""

    def __init__(self, cfg: DeployConfig, target: SwarmTarget, last: ExportOutput | None) -> None:
        self.cfg, self.target, self.last = cfg, target, last
        self.kind, self.endpoint = self.target.kind, self.target.endpoint

    def describe_rollout(self, model: str, version: int) -> str:
        r = self.cfg.rollout
        count = r.replicas if r.swarm_mode == "replicated" else "one per node"
        return (f"rolling out {model} v{version} to swarm service {self.target.service(model)} "
                f"({count} replica(s)) at {self.endpoint}")

    def rollout(self, model: str, version: int, *, store: Store | None, golden: Path | None,
                verify: bool = True) -> RolloutResult:
        """The replicas fetch from the configured store themselves (`store` is not used)."""
        from pipeline.rollout.swarm_engine import SwarmRolloutFailed
        from pipeline.rollout.swarm_run import rollout_swarm

        try:
            report = rollout_swarm(self.cfg, model, version, verify=verify, golden=golden, target=self.target,
                                   last=self.last)
        except SwarmRolloutFailed as exc:
            raise EngineFailed(str(exc), exc.report.to_json()) from None
        return _swarm_result(report.to_json(), self.cfg.rollout.stable_label)

    def rollback(self, model: str, *, verify: bool = True) -> RolloutResult:
        from pipeline.rollout.swarm_run import rollback_swarm

        return _swarm_result(rollback_swarm(self.cfg, model, target=self.target), self.cfg.rollout.stable_label)

    def finish_clean_up(self, model: str) -> str | None:
        try:
            return self.target.finish_clean_up(model)
        except Exception as exc:  # noqa: BLE001 - status still reports what it can
            return f"clean-up pending, not finished now: {exc}"
