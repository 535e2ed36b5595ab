"""Process identity, the supervisor and the local lock — real processes, no model server needed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import build_config
from pipeline.errors import RolloutError
from pipeline.lock_slot import LockHolder
from pipeline.process_identity import ProcessIdentity, boot_id, cmdline, start_ticks
from pipeline.targets import supervisor as sup
from pipeline.targets.local import LocalTarget


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process whose command line even mentions the model server."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "serving.modelserver", "pipeline.targets.supervisor"])
    deadline = time.monotonic() + 5
    # until exec: a forked child still shows the parent's command line (a loaded box showed it)
    while not any("pipeline.targets.supervisor" in a for a in cmdline(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def local_target(tmp_path: Path) -> LocalTarget:
    cfg = build_config({"rollout": {"local_dir": str(tmp_path / "serving")}})
    return LocalTarget(cfg.rollout, tmp_path / "serving")


def write_state(target: LocalTarget, state: dict) -> None:
    target.dir.mkdir(parents=True, exist_ok=True)
    target.state_path.write_text(json.dumps(state))


@pytest.mark.parametrize("recorded", ["old_format", "other_start_time", "no_token_on_cmdline", "other_boot"])
def test_stale_server_json_with_a_reused_pid_sends_no_signal(tmp_path, sleeper, recorded):
    ticks = start_ticks(sleeper.pid)
    assert ticks is not None
    identity = {"pid": sleeper.pid, "start_ticks": ticks, "boot_id": boot_id(), "token": "tok-123"}
    state = {
        "old_format": {"pid": sleeper.pid, "cmd": ["serving.modelserver"]},
        "other_start_time": {"supervisor": {**identity, "start_ticks": ticks - 1, "token": ""}, "instance": ""},
        "no_token_on_cmdline": {"supervisor": identity, "instance": "tok-123"},
        "other_boot": {"supervisor": {**identity, "boot_id": "another-boot", "token": ""}, "instance": ""},
    }[recorded]
    target = local_target(tmp_path)
    write_state(target, state)
    assert not target.running() and target.pid() is None
    target.stop(timeout_s=0.5)
    time.sleep(0.2)
    assert sleeper.poll() is None  # still alive: nothing was signalled


def test_identity_signals_the_process_it_recorded(sleeper):
    identity = ProcessIdentity.of(sleeper.pid, "pipeline.targets.supervisor")
    assert identity is not None and identity.alive()
    assert identity.signal(signal.SIGTERM)
    assert sleeper.wait(5) == -signal.SIGTERM
    assert identity.mismatch() == f"pid {sleeper.pid} is not running"
    assert identity.signal(signal.SIGTERM) is False


def test_a_live_holder_keeps_its_lock_and_unlock_refuses(tmp_path):
    target = local_target(tmp_path)
    target.lock("alice", 1800)  # held by this (live) test process
    other = local_target(tmp_path)
    with pytest.raises(RolloutError, match=r"lock held by alice on .* pid \d+, \d+ s ago, running"):
        other.lock("bob", 1800)
    with pytest.raises(RolloutError, match="held by a running process"):
        other.force_unlock()
    assert target.lock_path.exists()
    result = CliRunner().invoke(app, ["serve", "unlock", "--set", f"rollout.local_dir={target.dir}"])
    assert result.exit_code == RolloutError.exit_code and "held by a running process" in result.stderr
    assert target.lock_path.exists()
    assert other.force_unlock(even_if_alive=True) and not target.lock_path.exists()


@pytest.mark.parametrize("how", ["dead_pid", "reused_pid"])
def test_a_crashed_holders_lock_is_broken_by_the_next_rollout(tmp_path, sleeper, how):
    target = local_target(tmp_path)
    target.dir.mkdir(parents=True)
    if how == "dead_pid":
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        identity = ProcessIdentity.of(gone.pid, "") or ProcessIdentity(gone.pid, 1, boot_id(), "")
        gone.wait()
    else:  # the pid is alive again, but it is another process now
        identity = ProcessIdentity(sleeper.pid, (start_ticks(sleeper.pid) or 0) - 5, boot_id(), "")
    import socket

    holder = LockHolder("crashed", socket.gethostname(), identity, time.time())
    target.lock_path.write_text(json.dumps(holder.to_json()))
    assert holder.crashed()
    target.lock("me", 1800)  # no `serve unlock` needed
    assert json.loads(target.lock_path.read_text())["owner"] == "me"
    target.unlock()
    assert sleeper.poll() is None


def test_a_lock_from_another_machine_is_not_judged_dead_here(tmp_path):
    holder = LockHolder("remote", "some-other-host", ProcessIdentity(999_999, 1, "x", ""), time.time())
    assert not holder.crashed()
    target = local_target(tmp_path)
    target.dir.mkdir(parents=True)
    target.lock_path.write_text(json.dumps(holder.to_json()))
    with pytest.raises(RolloutError, match="lock held by remote on some-other-host"):
        target.lock("me", 1800)
    assert target.force_unlock()  # its liveness cannot be checked from here: the operator decides


def test_purge_needs_yes_and_removes_the_local_runtime_dir(tmp_path):
    target = local_target(tmp_path)
    (target.models / "digits" / "1").mkdir(parents=True)
    args = ["serve", "purge", "--set", f"rollout.local_dir={target.dir}", "--json"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == RolloutError.exit_code and "--yes" in refused.stderr
    assert target.dir.exists()
    done = CliRunner().invoke(app, [*args, "--yes"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["removed"] == [f"directory {target.dir}"] and not target.dir.exists()


def test_backoff_doubles_to_a_cap():
    assert [sup.next_backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert sup.next_backoff(50) == sup.MAX_BACKOFF_S


def test_supervisor_restarts_a_dying_server_then_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(sup, "FIRST_BACKOFF_S", 0.01)
    monkeypatch.setattr(sup, "GIVE_UP_AFTER", 3)
    state_path = tmp_path / "supervisor.json"
    runner = sup.Supervisor([sys.executable, "-c", "raise SystemExit(3)"], state_path, "inst")
    assert runner.run() == 1
    state = sup.read_state(state_path)
    assert state is not None
    assert state["state"] == "gave_up" and state["restarts"] == 2 and state["consecutive_failures"] == 3
    assert state["last_exit"] == "exited with code 3" and len(state["history"]) == 3


def test_supervisor_stops_its_server_on_sigterm(tmp_path):
    state_path = tmp_path / "supervisor.json"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.targets.supervisor", "--state", str(state_path),
                             "--instance", "inst", "--", sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 20
        while (sup.read_state(state_path) or {}).get("state") != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        server = ProcessIdentity.from_json((sup.read_state(state_path) or {}).get("server"))
        assert server is not None and server.alive()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not server.alive()
        state = sup.read_state(state_path)
        assert state is not None and state["state"] == "stopped" and state["restarts"] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
