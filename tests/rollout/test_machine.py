"""The rollout state machine against an in-memory host: every transition and failure path, no I/O."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import RolloutError
from pipeline.rollout.clock import Deadline, FakeClock, StepTimeout
from pipeline.rollout.machine import Deadlines, Machine, RolloutFailed, VerifyOutcome
from pipeline.rollout.plan import Served, UpdatePlan, previous_version, safe_config
from tests.rollout.fakes import FakeHost

M = "digits"


class Verifier:
    def __init__(self, ok: bool = True, reason: str = "max abs diff 0.5 > atol") -> None:
        self.ok, self.reason, self.calls = ok, reason, []

    def __call__(self, version, label, timeout_s):
        self.calls.append((version, label))
        return VerifyOutcome(self.ok, "" if self.ok else self.reason, {"max_abs_diff": 0.0 if self.ok else 0.5})


def machine(host: FakeHost, verifier=None, **kw) -> Machine:
    return Machine(host, verifier if verifier is not None else Verifier(), clock=host.clock,
                   deadlines=Deadlines(start=10, load=5, verify=5, label=5), poll_s=0.25, **kw)


def stable_host(version: int = 1) -> FakeHost:
    host = FakeHost(delivered={version})
    host.start(Served(M, (version,), {"stable": version}), 1)
    host.clock.advance(10)
    return host


# ------------------------------------------------------------------ pure plan


def test_update_plan_keeps_stable_loaded_at_every_phase():
    plan = UpdatePlan(M, 1, 2)
    for served in (plan.load_new, plan.canary, plan.switch, plan.promoted, plan.rolled_back):
        assert served.stable in served.versions
    assert plan.load_new.labels == {"stable": 1}
    assert plan.canary.labels == {"stable": 1, "canary": 2}
    assert plan.switch.versions == (1, 2) and plan.switch.stable == 2
    assert plan.promoted == Served(M, (2,), {"stable": 2})
    assert plan.rolled_back == Served(M, (1,), {"stable": 1})


def test_labels_must_name_loaded_versions():
    with pytest.raises(ValueError):
        Served(M, (1,), {"canary": 2})


def test_safe_config_and_previous_version():
    assert safe_config(Served(M, (1, 2), {"stable": 1, "canary": 2})) == Served(M, (1,), {"stable": 1})
    assert safe_config(Served(M, (1,), {})) is None and safe_config(None) is None
    assert previous_version([1, 2, 3, 5], [1, 3, 5], 5) == 3
    assert previous_version([4], [4], 4) is None


def test_deadline_uses_injected_clock():
    clock = FakeClock()
    d = Deadline(clock, 2.0, "step x")
    d.check()
    clock.advance(2.0)
    with pytest.raises(StepTimeout, match="step x: not done within 2 s"):
        d.check()


# ------------------------------------------------------------------ happy paths


def test_first_deploy_starts_loads_verifies_then_labels_stable():
    host, verifier = FakeHost(), Verifier()
    report = machine(host, verifier).rollout(M, 1)
    assert report.ok and report.action == "first-deploy"
    assert host.history[:2] == ["deliver 1", "start"]
    assert verifier.calls == [(1, None)]  # verified by version before it is labelled
    assert host.config == Served(M, (1,), {"stable": 1}) and host.live == host.config
    assert [s["step"] for s in report.steps][-4:] == ["verify", "label-stable", "persist-config", "done"]
    assert report.promoted and report.cleanup_pending is None
    assert host.locked_by is None


def test_update_goes_canary_verify_promote_with_stable_never_missing():
    host, verifier = stable_host(1), Verifier()
    report = machine(host, verifier).rollout(M, 2)
    assert report.ok and report.action == "update" and report.previous == 1
    assert host.applies == [UpdatePlan(M, 1, 2).load_new, UpdatePlan(M, 1, 2).canary,
                            UpdatePlan(M, 1, 2).switch, UpdatePlan(M, 1, 2).promoted]
    assert verifier.calls == [(None, "canary")]
    assert None not in host.stable_seen
    assert host.config == Served(M, (2,), {"stable": 2})
    assert host.delivered == {1, 2}  # old files kept for rollback
    assert set(report.timings_s) >= {"delivered", "canary_available", "promoted"}


def test_same_version_is_a_noop_that_clears_leftovers():
    host = stable_host(1)
    host.delivered.add(2)
    host.apply(Served(M, (1, 2), {"stable": 1, "canary": 2}), 1)
    report = machine(host).rollout(M, 1)
    assert report.action == "already-stable" and host.config == Served(M, (1,), {"stable": 1})


def test_stopped_runtime_is_restarted_with_stable_before_the_update():
    host = stable_host(1)
    host.stop()
    report = machine(host).rollout(M, 2)
    assert report.ok and report.steps[1]["step"] == "restore-stable"
    assert host.config.stable == 2


# ------------------------------------------------------------------ failures


def _assert_rolled_back(host: FakeHost, exc: RolloutFailed, fragment: str) -> None:
    assert fragment in str(exc)
    assert exc.report.rolled_back and not exc.report.ok
    assert "last line" in exc.report.logs
    assert host.config == Served(M, (1,), {"stable": 1}) and host.live == host.config
    assert None not in host.stable_seen
    assert host.locked_by is None


def test_bad_canary_rolls_back_to_stable_only_with_logs():
    host = stable_host(1)
    with pytest.raises(RolloutFailed) as err:
        machine(host, Verifier(ok=False)).rollout(M, 2)
    _assert_rolled_back(host, err.value, "verification of label 'canary' failed: max abs diff 0.5")
    assert err.value.report.verify["ok"] is False


def test_load_error_fails_fast_and_rolls_back():
    host = stable_host(1)
    host.bad_load.add(2)
    with pytest.raises(RolloutFailed) as err:
        machine(host).rollout(M, 2)
    _assert_rolled_back(host, err.value, "version 2 failed to load: Could not find SavedModel")


def test_load_deadline_rolls_back():
    host = stable_host(1)
    host.never_loads.add(2)
    with pytest.raises(RolloutFailed) as err:
        machine(host).rollout(M, 2)
    _assert_rolled_back(host, err.value, "not done within 5 s")


@pytest.mark.parametrize("n", [1, 2, 3])  # load, canary, promote; the 4th (unload-old) is after the commit point
def test_refused_reload_at_any_phase_rolls_back(n: int):
    host = stable_host(1)
    host.fail_apply = n
    with pytest.raises(RolloutFailed) as err:
        machine(host).rollout(M, 2)
    _assert_rolled_back(host, err.value, "reload refused")


def test_delivery_failure_leaves_host_untouched():
    host = stable_host(1)
    host.fail_deliver = True
    with pytest.raises(RolloutFailed, match="store unreachable"):
        machine(host).rollout(M, 2)
    assert host.applies[-1] == Served(M, (1,), {"stable": 1}) and host.config.stable == 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_runtime_dying_mid_rollout_persists_safe_config_and_says_how_to_restore(n: int):
    host = stable_host(1)
    host.die_on_apply = n
    m = machine(host)
    with pytest.raises(RolloutFailed) as err:
        m.rollout(M, 2)
    assert "not running" in str(err.value) and "tfrollout rollback" in str(err.value)
    assert not host.is_running and host.config == Served(M, (1,), {"stable": 1})
    host.die_on_apply = None
    report = machine(host).rollback(M, [1, 2])  # restores service
    assert report.action == "restore" and host.is_running and host.live == Served(M, (1,), {"stable": 1})
    # and a re-run completes the update
    assert machine(host).rollout(M, 2).ok and host.config.stable == 2


def test_first_deploy_failure_stops_runtime_and_serves_nothing():
    host = FakeHost()
    with pytest.raises(RolloutFailed, match="nothing is served"):
        machine(host, Verifier(ok=False)).rollout(M, 1)
    assert not host.is_running and host.config is None


def test_second_rollout_is_refused_while_one_holds_the_lock():
    host = stable_host(1)
    host.locked_by = "pid 42 on other since now"
    with pytest.raises(RolloutError, match="another rollout is in progress .*pid 42"):
        machine(host).rollout(M, 2)
    assert host.applies == [] and host.locked_by == "pid 42 on other since now"  # not released by us


def test_rollback_to_previous_committed_version_on_host():
    host = stable_host(1)
    machine(host).rollout(M, 2)
    report = machine(host).rollback(M, [1, 2])
    assert report.action == "rollback" and report.version == 1
    assert host.config == Served(M, (1,), {"stable": 1})
    assert None not in host.stable_seen


def test_rollback_skips_a_version_whose_canary_failed_and_verifies_what_it_restores():
    """Issue 27 (2): stable 1, v2's canary fails, v3 promoted: rollback goes to 1 — never to the
    rejected 2, though it is the newest committed version below 3 on the host — and the
    verifier checks v1 under the canary label before it is stable again."""
    host = stable_host(1)
    host.committed = {1, 2, 3}
    with pytest.raises(RolloutFailed):
        machine(host, verifier=lambda version, label, timeout: VerifyOutcome(False, "outputs differ", {})
                ).rollout(M, 2)
    assert machine(host).rollout(M, 3).ok and host.promotions(M) == [1, 3]
    checked: list[tuple[int | None, str | None]] = []

    def verifier(version, label, timeout_s):
        checked.append((host.live.labels.get(label) if label else version, label))
        return VerifyOutcome(True, "", {})

    report = machine(host).rollback(M, [1, 2, 3], verifier=verifier)
    assert report.ok and report.action == "rollback" and report.version == 1, report
    assert checked == [(1, "canary")] and host.config == Served(M, (1,), {"stable": 1})
    assert host.promotions(M) == [1]  # the rollback popped v3
    again = machine(host).rollback(M, [1, 2, 3])
    assert again.action == "none" and "promotion history: [1]" in again.note  # v2 was never stable


def test_status_errors_while_loading_are_waited_out():
    host = stable_host(1)
    host.status_errors = 3
    assert machine(host).rollout(M, 2).ok and host.status_reads > 3


def test_runtime_stopping_while_waiting_fails_without_waiting_for_the_deadline():
    host = stable_host(1)
    host.die_on_status = 1
    start = host.clock.monotonic()
    with pytest.raises(RolloutError, match=r"runtime stopped while waiting for digits version 2 \(unavailable\)"):
        machine(host).wait_available(M, 2, 5)
    assert host.clock.monotonic() - start < 1


def test_wait_deadline_names_the_last_state():
    host = stable_host(1)
    host.delivered.add(2)
    host.never_loads.add(2)
    host.apply(Served(M, (1, 2), {"stable": 1}), 1)
    with pytest.raises(StepTimeout, match="wait for digits version 2 AVAILABLE: not done within 5 s: state LOADING"):
        machine(host).wait_available(M, 2, 5)


def test_rollback_without_an_older_version_is_an_explicit_no_op():
    host = stable_host(1)
    report = machine(host).rollback(M, [1])
    assert report.ok and report.action == "none" and not report.rolled_back
    assert report.note is not None and "nothing to roll back" in report.note and "stays v1" in report.note
    assert report.served == {"model": M, "versions": [1], "labels": {"stable": 1}}
    assert host.config == Served(M, (1,), {"stable": 1}) and host.locked_by is None


# ------------------------------------------------------------------ ServingHost delivery modes (no runtime)


class StubTarget:
    """The files side of a ServingTarget: which versions are on the host, what was delivered."""

    endpoint = "127.0.0.1:1"

    def __init__(self, on_host: list[int]) -> None:
        self.on_host, self.delivered = on_host, []

    def versions(self, model: str) -> list[int]:
        return list(self.on_host)

    def deliver(self, model: str, version: int, source: Path) -> None:
        self.delivered.append((version, source.read_text()))


def _host(on_host: list[int], **kw):
    from pipeline.rollout.host import ServingHost

    return ServingHost(StubTarget(on_host), **kw)


def test_host_with_a_fetcher_delivers_through_it():
    def fetch(model: str, version: int, dest: Path) -> Path:
        dest.mkdir(parents=True)
        (dest / "saved_model.pb").write_text(f"{model} v{version}")
        return dest / "saved_model.pb"

    host = _host([1], fetch=fetch)
    assert host.has_version(M, 1) and not host.has_version(M, 2)
    host.deliver(M, 2)
    assert host.target.delivered == [(2, "digits v2")]


def test_passthrough_host_has_every_version_and_delivers_nothing():
    host = _host([], fetch=None, passthrough=True)
    assert host.has_version(M, 7)
    host.deliver(M, 7)
    assert host.target.delivered == []


def test_host_only_serves_what_is_on_the_host_and_names_what_it_cannot_deliver():
    host = _host([1, 2], fetch=None)
    assert host.has_version(M, 2) and not host.has_version(M, 3)
    with pytest.raises(RolloutError, match="digits version 3 is not on the serving host and no store is reachable"):
        host.deliver(M, 3)


def test_rollout_modules_import_without_tensorflow():
    """`status`, `rollback`, `serve stop` go through pipeline.rollout.host: it must not pull in TF
    (and the pure machine not even grpc)."""
    code = ("import sys; import pipeline.rollout.machine; grpc_free = 'grpc' not in sys.modules; "
            "import pipeline.rollout.host; print(grpc_free, 'tensorflow' in sys.modules, "
            "'tensorflow_serving.apis' in sys.modules)")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["True", "False", "False"]


# ------------------------------------------------------------------ promotion is a commit point


class MemoryPending:
    """PendingCleanup's interface, in memory."""

    def __init__(self) -> None:
        self.owed: dict[str, tuple[Served, str]] = {}

    def save(self, served: Served, reason: str) -> None:
        self.owed[served.model] = (served, reason)

    def load(self, model: str):
        return self.owed.get(model)

    def clear(self, model: str) -> None:
        self.owed.pop(model, None)


@pytest.mark.parametrize("failing", ["persist-config", "unload-old"])
def test_a_failure_after_promote_never_undoes_it_and_the_next_rollout_finishes_the_clean_up(failing: str):
    """Every step after the commit point fails (all retries): stable stays on the verified v2, the
    report says promoted with clean-up pending, the owed config is kept, and the next rollout
    applies it before anything else."""
    host, pending = stable_host(1), MemoryPending()
    if failing == "persist-config":
        host.fail_persist = {1, 2, 3}
    else:
        host.fail_applies = {4, 5, 6}  # load, canary, promote succeed; every unload-old attempt fails
    report = machine(host, pending=pending).rollout(M, 2)
    assert report.ok and report.promoted and not report.rolled_back
    assert report.cleanup_pending is not None and report.cleanup_pending.startswith(f"{failing} failed after 3")
    assert host.live is not None and host.live.stable == 2 and 1 not in host.stable_seen[host.stable_seen.index(2):]
    assert [s["step"] for s in report.steps].count(failing) == 3
    assert pending.load(M) == (UpdatePlan(M, 1, 2).promoted, report.cleanup_pending)
    host.fail_persist, host.fail_applies = None, set()
    again = machine(host, pending=pending).rollout(M, 2)  # the next command: finishes first
    assert again.ok and again.steps[1]["step"] == "finish-clean-up" and pending.load(M) is None
    assert host.config == host.live == UpdatePlan(M, 1, 2).promoted


def test_a_transient_failure_after_promote_is_retried_and_nothing_is_owed():
    host, pending = stable_host(1), MemoryPending()
    host.fail_applies = {4}  # the first unload-old attempt only
    report = machine(host, pending=pending).rollout(M, 2)
    assert report.ok and report.cleanup_pending is None and pending.load(M) is None
    assert host.config == host.live == UpdatePlan(M, 1, 2).promoted
    assert [s["step"] for s in report.steps].count("unload-old") == 2


def test_a_first_deploy_whose_config_cannot_be_written_stays_served():
    host, pending = FakeHost(), MemoryPending()
    host.fail_persist = {1, 2, 3}  # every write of the config after the label fails
    report = machine(host, pending=pending).rollout(M, 1)
    assert report.ok and report.promoted and host.live == Served(M, (1,), {"stable": 1})
    assert report.cleanup_pending is not None and pending.load(M) is not None


def test_rollback_and_status_finish_owed_clean_up_first():
    host, pending = stable_host(1), MemoryPending()
    host.fail_persist = {1, 2, 3}
    machine(host, pending=pending).rollout(M, 2)
    assert host.config.stable == 1 and host.live.stable == 2  # only the runtime knows v2 is stable
    host.fail_persist = None
    assert machine(host, pending=pending).finish_clean_up(M) == "finished the clean-up an earlier promotion owed"
    assert host.config == UpdatePlan(M, 1, 2).promoted and machine(host, pending=pending).finish_clean_up(M) is None
    host.delivered.add(3)
    host.fail_persist = {host.persists + 1, host.persists + 2, host.persists + 3}
    machine(host, pending=pending).rollout(M, 3)
    assert host.config.stable == 2 and host.live.stable == 3 and pending.load(M) is not None
    host.fail_persist = None
    back = machine(host, pending=pending).rollback(M, [1, 2, 3])  # from v3, which the runtime serves
    assert back.ok and back.steps[1]["step"] == "finish-clean-up" and back.previous == 3
    assert back.action == "rollback" and host.live.stable == 2 and pending.load(M) is None
