"""Local target: a supervised `tfrollout-model-server` process serving `<dir>/models`.

`start` launches `pipeline.targets.supervisor`, which runs the model server and
restarts it with backoff when it dies. `<dir>/server.json` records the supervisor's
`ProcessIdentity` (pid + start time + boot + instance token): `serve stop` signals
only a process that still matches all of them, never a recycled pid. The rollout
lock is an O_EXCL file next to the models, with its holder's identity inside.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.lock_slot import LockHolder
from pipeline.process_identity import ProcessIdentity
from pipeline.targets.base import CONFIG_NAME, LOCK_NAME, TOKEN_NAME, ReloadableTarget
from pipeline.targets.supervisor import read_state

MARKER = ".tfrollout-delivered"


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class LocalTarget(ReloadableTarget):
    kind = "local"

    def __init__(self, cfg: RolloutConfig, directory: Path) -> None:
        super().__init__(cfg)
        self.dir = Path(directory).resolve()
        self.models = self.dir / "models"
        self.config_path = self.dir / CONFIG_NAME
        self.state_path = self.dir / "server.json"
        self.log_path = self.dir / "server.log"
        self.lock_path = self.dir / LOCK_NAME
        self.supervisor_state_path = self.dir / "supervisor.json"
        self.token_path = self.dir / TOKEN_NAME

    def delivered_path(self, model: str) -> str:
        return str(self.models / model)

    def admin_protected(self) -> bool:
        return self.cfg.admin_api != "open"  # our own model server: "auto" means protected

    def admin_token(self) -> str | None:
        if not self.admin_protected():
            return None
        try:
            return self.token_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _ensure_token(self) -> str:
        """A fresh 256-bit token, readable only by this user, created once per runtime dir."""
        token = self.admin_token()
        if token:
            return token
        token = secrets.token_urlsafe(32)
        fd = os.open(self.token_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token

    # ------------------------------------------------------------- process
    def _state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _supervisor(self) -> ProcessIdentity | None:
        """The recorded supervisor, if that exact process still runs (pid reuse is not enough)."""
        state = self._state()
        identity = ProcessIdentity.from_json(state.get("supervisor")) if state else None
        return identity if identity is not None and identity.alive() else None

    def _server(self) -> ProcessIdentity | None:
        """The model server the supervisor last started, if that exact process still runs."""
        sup = read_state(self.supervisor_state_path)
        data = sup.get("server") if sup else None
        identity = ProcessIdentity.from_json(data) if isinstance(data, dict) else None
        if identity is None:
            return None
        instance = str(sup.get("instance", "")) if sup else ""
        state = self._state() or {}
        if not instance or instance != state.get("instance") or not identity.alive():
            return None
        return identity

    def pid(self) -> int | None:
        """The model server's pid (the process answering requests), if it runs."""
        server = self._server()
        return server.pid if server is not None and self._supervisor() is not None else None

    def running(self) -> bool:
        """The supervised runtime exists: the server is up or its supervisor is restarting it."""
        return self._supervisor() is not None

    def start(self) -> None:
        if self.running():
            return
        self._stop_orphan()
        host, port = self.cfg.host, self.cfg.grpc_port
        if _port_open(host, port):
            raise RolloutError(f"cannot start the local model server: {host}:{port} is already in use "
                               "by another process (set rollout.grpc_port)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(exist_ok=True)
        server = [sys.executable, "-m", "serving.modelserver.main", f"--host={host}", f"--port={port}",
                  f"--rest_api_port={self.cfg.rest_port}", f"--model_config_file={self.config_path}",
                  "--file_system_poll_wait_seconds=1"]
        if self.admin_protected():
            self._ensure_token()
            server += self.admin_args(str(self.token_path))
        server += self.cfg.serving_args
        instance = secrets.token_hex(16)
        cmd = [sys.executable, "-m", "pipeline.targets.supervisor", "--state", str(self.supervisor_state_path),
               "--instance", instance, "--", *server]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        self.supervisor_state_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(server)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, close_fds=True)
        identity = ProcessIdentity.of(proc.pid, instance)
        if identity is None:
            raise RolloutError(f"the model server supervisor exited at once; see {self.log_path}")
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": identity.to_json(), "instance": instance,
                                   "endpoint": self.endpoint, "cmd": server, "started": time.time()}))
        os.replace(tmp, self.state_path)

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM the supervisor (it stops the server gracefully); SIGKILL both after `timeout_s`.

        Nothing is signalled unless the recorded identity still matches: a stale
        server.json whose pid now belongs to someone else's process is left alone.
        """
        supervisor, server = self._supervisor(), self._server()
        if supervisor is None:
            self._stop_orphan()
            return
        supervisor.signal(signal.SIGTERM)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and supervisor.alive():
            time.sleep(0.05)
        for process in (supervisor, server):
            if process is not None and process.signal(signal.SIGKILL):
                while process.alive():
                    time.sleep(0.05)

    def _stop_orphan(self) -> None:
        """A server whose supervisor was SIGKILLed keeps the port: stop it (identity-checked)."""
        server = self._server()
        if server is None or not server.signal(signal.SIGTERM):
            return
        end = time.monotonic() + 40.0
        while time.monotonic() < end and server.alive():
            time.sleep(0.05)
        if server.signal(signal.SIGKILL):
            while server.alive():
                time.sleep(0.05)

    def purge(self) -> list[str]:
        """Stop the runtime and delete its directory: delivered versions, config, logs, state."""
        self.stop()
        if not self.dir.exists():
            return []
        shutil.rmtree(self.dir)
        return [f"directory {self.dir}"]

    def supervision(self) -> dict[str, Any]:
        """Restarts and the last exit, for `tfrollout status`."""
        sup = read_state(self.supervisor_state_path) or {}
        server = self._server()
        recorded = sup.get("state")
        # a supervisor that gave up has exited: its last word is what status must show
        state = recorded if self.running() or recorded == "gave_up" else "not running"
        return {"state": state, "restarts": int(sup.get("restarts", 0) or 0),
                "consecutive_failures": int(sup.get("consecutive_failures", 0) or 0),
                "last_exit": sup.get("last_exit"), "last_exit_at": sup.get("last_exit_at"),
                "last_inflight": sup.get("last_inflight"), "server_pid": server.pid if server else None}

    def logs(self, tail: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 256 * 1024))
                lines = fh.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    # --------------------------------------------------------------- files
    def read_config(self) -> str | None:
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def write_config(self, text: str | None) -> None:
        if text is None:
            self.config_path.unlink(missing_ok=True)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_name(CONFIG_NAME + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def deliver(self, model: str, version: int, source: Path) -> None:
        dest = self.models / model / str(version)
        staging = self.models / model / f".incoming-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, staging)
        (staging / MARKER).write_text(json.dumps({"version": version, "at": time.time()}))
        if dest.exists():  # an incomplete earlier delivery (no marker): replace it
            shutil.rmtree(dest)
        os.replace(staging, dest)

    def versions(self, model: str) -> list[int]:
        base = self.models / model
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir()
                      if p.name.isdigit() and (p / MARKER).is_file())

    # ---------------------------------------------------------------- lock
    def lock_records(self) -> LockFile:
        return LockFile(self.lock_path)

    def lock_where(self) -> str:
        return str(self.dir)

    def describe(self) -> dict:
        return {**super().describe(), "pid": self.pid(), "dir": str(self.dir), "log": str(self.log_path),
                "supervisor": self.supervision()}


class LockFile:
    """The local runtime's rollout lock: a file created with O_EXCL in its directory."""

    def __init__(self, path: Path):
        self.path = path

    def create(self, holder: LockHolder) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(holder.to_json()))
        return True

    def read(self) -> LockHolder | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return LockHolder.unreadable("unreadable lock file")
        try:
            holder = LockHolder.from_json(json.loads(text))
        except ValueError:
            holder = None
        return holder or LockHolder.unreadable("unreadable lock file")

    def remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
