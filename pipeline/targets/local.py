"""Local target: a detached `tfrollout-model-server` process serving `<dir>/models`.

The pid is recorded in `<dir>/server.json` so `tfrollout serve stop` (or a test)
stops exactly that process; the lock is an O_EXCL file next to the models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.targets.base import CONFIG_NAME, LOCK_NAME, ServingTarget

MARKER = ".tfrollout-delivered"


def pid_alive(pid: int) -> bool:
    """True for a live, non-zombie process (reaping it first if it is our own child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class LocalTarget(ServingTarget):
    kind = "local"

    def __init__(self, cfg: RolloutConfig, directory: Path) -> None:
        super().__init__(cfg)
        self.dir = Path(directory).resolve()
        self.models = self.dir / "models"
        self.config_path = self.dir / CONFIG_NAME
        self.state_path = self.dir / "server.json"
        self.log_path = self.dir / "server.log"
        self.lock_path = self.dir / LOCK_NAME

    def delivered_path(self, model: str) -> str:
        return str(self.models / model)

    # ------------------------------------------------------------- process
    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        state = self._state()
        if not state:
            return None
        pid = int(state["pid"])
        if pid_alive(pid) and "serving.modelserver" in _cmdline(pid):
            return pid
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        if self.running():
            return
        host, port = self.cfg.host, self.cfg.grpc_port
        if _port_open(host, port):
            raise RolloutError(f"cannot start the local model server: {host}:{port} is already in use "
                               "by another process (set rollout.grpc_port)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "serving.modelserver.main", f"--host={host}", f"--port={port}",
               f"--rest_api_port={self.cfg.rest_port}", f"--model_config_file={self.config_path}",
               "--file_system_poll_wait_seconds=1", *self.cfg.serving_args]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, close_fds=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "endpoint": self.endpoint, "cmd": cmd,
                                   "started": time.time()}))
        os.replace(tmp, self.state_path)

    def stop(self, timeout_s: float = 40.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)

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
    def lock(self, owner: str, stale_after_s: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_stale(stale_after_s):
                    continue
                holder = self.lock_path.read_text(errors="replace").strip() or "unknown"
                raise RolloutError(f"another rollout is in progress on {self.dir} (lock held by {holder}); "
                                   f"if it crashed, remove {self.lock_path} or run `tfrollout serve unlock`"
                                   ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "owner": owner, "at": time.time()}))
            self._locked = True
            return

    def _break_stale(self, stale_after_s: float) -> bool:
        """A lock whose process died (same machine) or that is too old is removed."""
        try:
            data = json.loads(self.lock_path.read_text())
            dead = not pid_alive(int(data["pid"]))
            old = time.time() - float(data["at"]) > stale_after_s
        except (OSError, ValueError, KeyError):
            dead, old = False, False
        if dead or old:
            self.lock_path.unlink(missing_ok=True)
            return True
        return False

    def unlock(self) -> None:
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False

    def force_unlock(self) -> bool:
        existed = self.lock_path.exists()
        self.lock_path.unlink(missing_ok=True)
        return existed

    def describe(self) -> dict:
        return {**super().describe(), "pid": self.pid(), "dir": str(self.dir), "log": str(self.log_path)}
