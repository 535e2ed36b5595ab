"""The rollout state machine: first deploy, canary update, promote, roll back (pure logic).

It talks only to a `Host` (the serving host as a few verbs) and a `Verifier`, both
injected, plus a `Clock`: every transition is unit-testable with fakes and no
Docker. Invariants kept on every path:
- `stable` always names a loaded, AVAILABLE version while an update runs;
- on any failure the host is brought back to the last safe config (`stable -> N`
  only) and that config is persisted, so the host never keeps a half-applied set;
- one rollout at a time (the host's lock), released in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import RolloutError, TfRolloutError
from pipeline.rollout.clock import Clock, Deadline, SystemClock
from pipeline.rollout.history import rollback_target
from pipeline.rollout.machine_types import (
    Deadlines,
    Host,
    Phase,
    RolloutFailed,
    RolloutReport,
    Verifier,
    VerifyOutcome,
)
from pipeline.rollout.pending import PendingCleanup
from pipeline.rollout.plan import (
    CANARY,
    STABLE,
    Served,
    UpdatePlan,
    first_load,
    first_stable,
    safe_config,
)
from serving.client.availability import assess

__all__ = ["Deadlines", "Host", "Machine", "Phase", "RolloutFailed", "RolloutReport", "Verifier", "VerifyOutcome",
           "wall_clock_owner"]


class Machine:
    """Drives one rollout on one host; create one per command."""

    def __init__(self, host: Host, verifier: Verifier | None, *, clock: Clock | None = None,
                 deadlines: Deadlines = Deadlines(), poll_s: float = 0.1, log_tail: int = 200,
                 stable_label: str = STABLE, canary_label: str = CANARY,
                 owner: str = "tfrollout", pending: PendingCleanup | None = None,
                 cleanup_attempts: int = 3) -> None:
        self.host, self.verifier = host, verifier
        self.pending, self.cleanup_attempts = pending, cleanup_attempts
        self.clock = clock or SystemClock()
        self.d, self.poll_s, self.log_tail = deadlines, poll_s, log_tail
        self.stable_label, self.canary_label, self.owner = stable_label, canary_label, owner
        self._t0 = 0.0

    # ---------------------------------------------------------------- helpers
    def _step(self, report: RolloutReport, phase: Phase, fn: Callable[[], Any], detail: str = "") -> Any:
        start = self.clock.monotonic()
        entry: dict[str, Any] = {"step": phase.value, "detail": detail}
        report.steps.append(entry)
        try:
            result = fn()
        except BaseException as exc:
            entry.update(ok=False, error=str(exc), duration_s=round(self.clock.monotonic() - start, 3))
            raise
        entry.update(ok=True, duration_s=round(self.clock.monotonic() - start, 3))
        return result

    def _mark(self, report: RolloutReport, name: str) -> None:
        report.timings_s[name] = round(self.clock.monotonic() - self._t0, 3)

    def wait_available(self, model: str, version: int, timeout_s: float) -> None:
        """Poll the host's version states until `version` is AVAILABLE; fail fast on a load error
        or a dead runtime. Whether a look means served / failed / not yet is decided by
        `serving.client.availability.assess`, the rule `PredictionClient.wait_until_available`
        uses too; this loop only adds the injected clock and the runtime check."""
        deadline = Deadline(self.clock, timeout_s, f"wait for {model} version {version} AVAILABLE")
        last = "no status yet"
        while True:
            try:
                states = self.host.states(model, min(max(deadline.remaining(), 0.2), 5.0))
            except Exception as exc:  # noqa: BLE001 - status errors while loading are expected
                last = str(exc)
            else:
                seen = assess(states, version)
                if seen.served is not None:
                    return
                if seen.error:
                    raise RolloutError(f"{model} version {version} failed to load: {seen.error}")
                last = seen.detail
            if not self.host.running():
                raise RolloutError(f"the serving runtime stopped while waiting for {model} "
                                   f"version {version} ({last})")
            deadline.check(last)
            self.clock.sleep(self.poll_s)

    def _ensure_running(self, report: RolloutReport, current: Served | None) -> Served | None:
        """A stopped runtime is restarted with the safe config (service first, then the update)."""
        safe = safe_config(current, self.stable_label)
        if self.host.running():
            return current
        if safe is None:
            return current
        self._step(report, Phase.RESTORE, lambda: self.host.start(safe, self.d.start),
                   f"runtime not running: restart serving stable={safe.stable}")
        self.wait_available(safe.model, safe.versions[0], self.d.load)
        return safe

    def _verify(self, report: RolloutReport, version: int | None, label: str | None) -> None:
        if self.verifier is None:
            return
        outcome = self.verifier(version, label, self.d.verify)
        report.verify = {"ok": outcome.ok, "reason": outcome.reason,
                         **{k: outcome.report.get(k) for k in
                            ("max_abs_diff", "agreement", "served_versions", "requests", "latency_ms", "gate")
                            if k in outcome.report}}
        if not outcome.ok:
            which = f"label {label!r}" if label else f"version {version}"
            raise RolloutError(f"verification of {which} failed: {outcome.reason}")

    # ---------------------------------------------------------------- rollout
    def rollout(self, model: str, version: int) -> RolloutReport:
        """Bring `version` to stable (first deploy or canary update); raises RolloutFailed."""
        report = RolloutReport(model=model, version=version)
        self._t0 = self.clock.monotonic()
        self._step(report, Phase.LOCK, lambda: self.host.lock(self.owner))
        try:
            self._finish_pending(report, model)
            current = self.host.read(model)
            report.previous = current.stable if current else None
            try:
                current = self._ensure_running(report, current)
                stable = current.stable if current else None
                if stable is None:
                    report.action = "first-deploy"
                    self._first_deploy(report, model, version)
                elif stable == version:
                    report.action = "already-stable"
                    safe = safe_config(current, self.stable_label)
                    assert safe is not None
                    if current != safe:  # leftovers of an interrupted rollout
                        self._step(report, Phase.ROLLBACK, lambda: self.host.apply(safe, self.d.label),
                                   "drop leftovers of an interrupted rollout")
                else:
                    report.action = "update"
                    self._update(report, UpdatePlan(model, stable, version, self.canary_label,
                                                    self.stable_label), verify=True)
            except BaseException as exc:
                if report.promoted:  # past the commit point: never undo it (see _clean_up)
                    raise
                self._recover(report, current, exc)
                raise RolloutFailed(report.error or str(exc), report) from None
            report.ok = True
            report.served = self._served_now(model)
            self._step(report, Phase.DONE, lambda: None)
            return report
        finally:
            self.host.unlock()

    def _served_now(self, model: str) -> dict[str, Any] | None:
        """The host's config for the report; unreadable is not a failure after the fact."""
        try:
            served = self.host.read(model)
        except Exception:  # noqa: BLE001
            return None
        return served.to_json() if served is not None else None

    # ---------------------------------------------------------------- after the commit point
    def _clean_up(self, report: RolloutReport, steps: list[tuple[Phase, Callable[[], Any], str]],
                  owed: Served) -> None:
        """Run the steps after promotion, each retried; what still fails is owed (saved for the
        next command), reported as a warning — never a rollback."""
        for phase, fn, detail in steps:
            error: BaseException | None = None
            for attempt in range(1, self.cleanup_attempts + 1):
                try:
                    self._step(report, phase, fn, detail if attempt == 1 else f"{detail} (attempt {attempt})")
                    error = None
                    break
                except Exception as exc:  # noqa: BLE001 - retried, then owed
                    error = exc
                    self.clock.sleep(min(2.0 ** (attempt - 1), 4.0))
            if error is not None:
                reason = f"{phase.value} failed after {self.cleanup_attempts} attempts: {error}"
                report.cleanup_pending = reason
                if self.pending is not None:
                    self.pending.save(owed, reason)
                return
        if self.pending is not None:
            self.pending.clear(owed.model)

    def _finish_pending(self, report: RolloutReport, model: str) -> bool:
        """Apply the config an earlier promotion still owed, before anything else; True if one was owed."""
        owed = self.pending.load(model) if self.pending is not None else None
        if owed is None or self.pending is None:
            return False
        served, reason = owed
        self._step(report, Phase.FINISH, lambda: self.host.apply(served, self.d.label),
                   f"owed since: {reason}")
        self.pending.clear(model)
        return True

    def finish_clean_up(self, model: str) -> str | None:
        """For `status`: finish owed clean-up under the lock; a one-line outcome, or None if none was owed."""
        if self.pending is None or self.pending.load(model) is None:
            return None  # the usual case: no lock taken
        report = RolloutReport(model=model, version=0)
        try:
            self.host.lock(self.owner)
        except Exception as exc:  # noqa: BLE001 - someone else is rolling out: they finish it
            return f"clean-up pending, not finished now: {exc}"
        try:
            finished = self._finish_pending(report, model)  # re-read under the lock
            return "finished the clean-up an earlier promotion owed" if finished else None
        except Exception as exc:  # noqa: BLE001
            return f"clean-up still pending: {exc}"
        finally:
            self.host.unlock()

    def _first_deploy(self, report: RolloutReport, model: str, version: int) -> None:
        if not self.host.has_version(model, version):
            self._step(report, Phase.DELIVER, lambda: self.host.deliver(model, version), f"version {version}")
        self._mark(report, "delivered")
        load = first_load(model, version)
        if self.host.running():
            self._step(report, Phase.LOAD, lambda: self.host.apply(load, self.d.load), f"version {version}")
        else:
            self._step(report, Phase.START, lambda: self.host.start(load, self.d.start), f"version {version}")
        self._step(report, Phase.WAIT, lambda: self.wait_available(model, version, self.d.load))
        self._mark(report, "available")
        self._step(report, Phase.VERIFY, lambda: self._verify(report, version, None), f"version {version}")
        stable = first_stable(model, version, self.stable_label)
        self._step(report, Phase.LABEL_STABLE, lambda: self.host.reload(stable, self.d.label))
        report.promoted = True  # the commit point
        self._mark(report, "promoted")
        self._clean_up(report, [(Phase.PERSIST, lambda: self.host.persist(stable, model), "")], stable)

    def _update(self, report: RolloutReport, plan: UpdatePlan, *, verify: bool) -> None:
        model, new = plan.model, plan.new
        if not self.host.has_version(model, new):
            self._step(report, Phase.DELIVER, lambda: self.host.deliver(model, new), f"version {new}")
        self._mark(report, "delivered")
        self._step(report, Phase.LOAD, lambda: self.host.apply(plan.load_new, self.d.load),
                   f"versions {plan.load_new.versions}, {self.stable_label}->{plan.old}")
        self._step(report, Phase.WAIT, lambda: self.wait_available(model, new, self.d.load))
        self._step(report, Phase.CANARY, lambda: self.host.apply(plan.canary, self.d.label),
                   f"{self.canary_label}->{new}")
        self._mark(report, "canary_available")
        if verify:
            self._step(report, Phase.VERIFY, lambda: self._verify(report, None, self.canary_label),
                       f"label {self.canary_label!r}")
        self._step(report, Phase.PROMOTE, lambda: self.host.reload(plan.switch, self.d.label),
                   f"{self.stable_label}->{new}")
        report.promoted = True  # the commit point: from here on, failures are retried and owed, not undone
        self._mark(report, "promoted")
        self._clean_up(report, [(Phase.PERSIST, lambda: self.host.persist(plan.switch, model), ""),
                                (Phase.DROP_OLD, lambda: self.host.apply(plan.promoted, self.d.label),
                                 f"unload {plan.old} (files kept)")], plan.promoted)

    def _recover(self, report: RolloutReport, before: Served | None, exc: BaseException) -> None:
        """Restore the safe config (or stop a failed first deploy), attach logs, set the error."""
        reason = str(exc) if isinstance(exc, TfRolloutError) else f"{type(exc).__name__}: {exc}"
        safe = safe_config(before, self.stable_label)
        running = self._safe_running()
        try:
            report.logs = self.host.logs(self.log_tail)
        except Exception as log_exc:  # noqa: BLE001
            report.logs = f"(logs unavailable: {log_exc})"
        notes = []
        try:
            if safe is None:
                self._step(report, Phase.ROLLBACK, self.host.stop, "first deploy failed: stop the runtime")
                self.host.persist(None, report.model)
                notes.append("first deploy failed; runtime stopped, nothing is served")
            elif running:
                self._step(report, Phase.ROLLBACK, lambda: self.host.apply(safe, self.d.load),
                           f"{self.stable_label}->{safe.stable} only")
                report.rolled_back = True
                notes.append(f"rolled back: {self.stable_label} -> {safe.stable} only")
            else:
                self.host.persist(safe, report.model)
                notes.append(f"the serving runtime is not running; the host config was reset to "
                             f"{self.stable_label} -> {safe.stable} only: run `tfrollout rollback` "
                             "or re-run the deploy to restore service")
        except BaseException as rb_exc:  # noqa: BLE001
            try:
                self.host.persist(safe, report.model)
            except Exception:  # noqa: BLE001
                pass
            notes.append(f"rollback failed too: {rb_exc}")
        report.error = f"rollout of {report.model} version {report.version} failed: {reason}; " + "; ".join(notes)

    def _safe_running(self) -> bool:
        try:
            return self.host.running()
        except Exception:  # noqa: BLE001
            return False

    # ---------------------------------------------------------------- rollback
    def rollback(self, model: str, committed: list[int], *, verifier: Verifier | None = None) -> RolloutReport:
        """Drop an interrupted rollout's canary; else return to the last version verified as stable
        before the current one (the host's promotion history: never a version whose canary
        failed), checked with `verifier` (its golden set) before it is promoted again."""
        current = self.host.read(model)
        if current is None or current.stable is None:
            raise RolloutError(f"nothing to roll back: no stable version of {model!r} on the serving host")
        report = RolloutReport(model=model, version=current.stable, previous=current.stable)
        self._t0 = self.clock.monotonic()
        self._step(report, Phase.LOCK, lambda: self.host.lock(self.owner))
        try:
            if self._finish_pending(report, model):  # the file may have named the old stable
                fresh = self.host.read(model)
                if fresh is not None and fresh.stable is not None:
                    current, report.version, report.previous = fresh, fresh.stable, fresh.stable
            safe = safe_config(current, self.stable_label)
            assert safe is not None
            try:
                if not self.host.running():
                    report.action = "restore"
                    self._step(report, Phase.RESTORE, lambda: self.host.start(safe, self.d.start),
                               f"restart serving {self.stable_label}={safe.stable}")
                    self.wait_available(model, safe.versions[0], self.d.load)
                elif current != safe:
                    report.action = "drop-canary"
                    self._step(report, Phase.ROLLBACK, lambda: self.host.apply(safe, self.d.load),
                               f"{self.stable_label}->{safe.stable} only")
                else:
                    serving = report.version  # current.stable, as an int
                    history = self.host.promotions(model)
                    available = set(self.host.versions_on_host(model)) & set(committed)
                    prev = rollback_target(history, available, serving)
                    if prev is None:  # nothing to do is not a failure: say so, change nothing
                        report.action, report.ok = "none", True
                        report.note = (f"nothing to roll back: no version of {model!r} verified as "
                                       f"{self.stable_label} before v{serving} is still on the serving host "
                                       f"and committed (promotion history: {history or 'none recorded'}); "
                                       f"{self.stable_label} stays v{serving}")
                        report.served = current.to_json()
                        return report
                    report.action, report.version = "rollback", prev
                    saved, self.verifier = self.verifier, verifier
                    try:
                        self._update(report, UpdatePlan(model, serving, prev, self.canary_label,
                                                        self.stable_label), verify=verifier is not None)
                    finally:
                        self.verifier = saved
            except BaseException as exc:
                if report.promoted:
                    raise
                self._recover(report, current, exc)
                raise RolloutFailed(report.error or str(exc), report) from None
            report.ok = True
            report.served = self._served_now(model)
            return report
        finally:
            self.host.unlock()


def wall_clock_owner() -> str:
    """Lock owner text: the user (host, pid and time are recorded by the target's lock itself)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown user"
