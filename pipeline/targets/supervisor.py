"""Keeps the local model server running: restart with backoff, every restart on record.

Run as `python -m pipeline.targets.supervisor --state FILE --instance TOKEN -- CMD...`
(the local target does this). A server that dies for any reason other than our own
SIGTERM is started again after a growing pause (0.5 s doubling to 30 s; back to 0.5 s
once a run lasted a minute), so a crash or an OOM kill does not leave the host
without a runtime until someone runs `tfrollout` again. The state file says how often
that happened and why, which `tfrollout status` shows.

The server is started with TFROLLOUT_INFLIGHT_FILE=<state file>.inflight: it keeps the
metadata of the requests it is running there (model, signature, input dtypes and
shapes; never values; serving/modelserver/inflight.py). After an abnormal exit the
supervisor logs what was in flight and keeps it in the state (`last_inflight`), so
the request that killed the server can be found.

Standard library only: the supervisor must stay small and start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.process_identity import ProcessIdentity
from serving.modelserver.inflight import ENV as INFLIGHT_ENV
from serving.modelserver.inflight import read_inflight

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a run this long resets the backoff
GIVE_UP_AFTER = 20  # consecutive short runs: the server cannot start (bad flags, port taken)
STOP_GRACE_S = 35.0


def next_backoff(consecutive_failures: int) -> float:
    """Pause before restart number `consecutive_failures` (1-based) of a run of quick deaths."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(consecutive_failures - 1, 0))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def describe_request(meta: dict[str, Any]) -> str:
    """`model=m version=1 signature=s inputs=x:float32[2,8,8,1]` from an inflight record."""
    raw = meta.get("inputs")
    inputs: dict[str, Any] = raw if isinstance(raw, dict) else {}
    shapes = ",".join(f"{alias}:{spec[0]}[{','.join(str(d) for d in spec[1])}]"
                      for alias, spec in inputs.items()
                      if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], list))
    return (f"model={meta.get('model')} version={meta.get('version')} "
            f"signature={meta.get('signature')} inputs={shapes or '-'}")


@dataclass
class SupervisorState:
    """What the state file holds (written atomically after every change)."""

    instance: str
    state: str = "starting"  # starting | running | backoff | stopped | gave_up
    restarts: int = 0
    consecutive_failures: int = 0
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_restart_at: float | None = None
    server: dict[str, Any] | None = None
    last_inflight: list[dict[str, Any]] | None = None  # requests running at the last crash
    history: list[dict[str, Any]] = field(default_factory=list)

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Supervisor:
    """Runs `command` until told to stop; restarts it with backoff when it dies."""

    def __init__(self, command: Sequence[str], state_path: Path, instance: str) -> None:
        self.command = list(command)
        self.state_path = state_path
        self.state = SupervisorState(instance=instance)
        self.stopping = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self.inflight_path = state_path.with_name(state_path.name + ".inflight")

    def request_stop(self, *_: object) -> None:
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.inflight_path.unlink(missing_ok=True)
        env = {**os.environ, INFLIGHT_ENV: str(self.inflight_path)}
        child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, close_fds=True, env=env)
        identity = ProcessIdentity.of(child.pid, "")
        self.state.server = identity.to_json() if identity else {"pid": child.pid}
        self.state.state = "running"
        self.state.write(self.state_path)
        return child

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code; SIGKILL if it ignores a stop for STOP_GRACE_S."""
        stop_seen: float | None = None
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stopping.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > STOP_GRACE_S:
                        child.kill()

    def run(self) -> int:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.child = self._spawn()
            if self.stopping.is_set():  # a stop that raced the spawn
                self.request_stop()
            code = self._wait(self.child)
            if self.stopping.is_set():
                break
            ran = time.monotonic() - started
            failures = 1 if ran >= HEALTHY_AFTER_S else self.state.consecutive_failures + 1
            why = describe_exit(code)
            print(f"tfrollout supervisor: model server {why} after {ran:.1f} s", file=sys.stderr, flush=True)
            inflight = read_inflight(self.inflight_path)
            self.state.last_inflight = inflight
            for meta in inflight:
                print(f"tfrollout supervisor: in flight at exit: {describe_request(meta)}", file=sys.stderr,
                      flush=True)
            self.state.consecutive_failures = failures
            self.state.last_exit, self.state.last_exit_at = why, time.time()
            self.state.history = [*self.state.history[-9:], {"at": time.time(), "exit": why, "ran_s": round(ran, 3)}]
            if failures >= GIVE_UP_AFTER:
                self.state.state = "gave_up"
                self.state.write(self.state_path)
                print(f"tfrollout supervisor: giving up after {failures} quick failures", file=sys.stderr,
                      flush=True)
                return 1
            self.state.state = "backoff"
            self.state.write(self.state_path)
            if self.stopping.wait(next_backoff(failures)):
                break
            self.state.restarts += 1
            self.state.last_restart_at = time.time()
        self.state.state = "stopped"
        self.state.server = None
        self.state.write(self.state_path)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.targets.supervisor")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--instance", required=True, help="token that identifies this supervisor")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no server command given after --")
    supervisor = Supervisor(command, args.state, args.instance)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
