"""A real OpenSSH server on 127.0.0.1 for the ssh:// engine tests: its own host key, config,
authorized key and log, started and stopped by pid. `docker system dial-stdio`, which the
docker SDK runs on every channel, then reaches the test engine through the remote side's
docker CLI, as it would on a remote machine.

`client_home()` writes what a user has in ~/.ssh: a config entry (alias, port, user,
IdentityFile) and the server's key in known_hosts — a test points HOME at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.procs import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True, timeout=30)
    return (path.with_suffix(".pub")).read_text().strip()


class SSHDaemon:
    """sshd -D on a free loopback port; `logins()` counts accepted public-key logins in its log."""

    def __init__(self, root: Path, docker_host: str = "unix:///var/run/docker.sock") -> None:
        self.root = root
        self.port = free_port()
        self.docker_host = docker_host
        self.log = root / "sshd.log"
        self._proc: subprocess.Popen | None = None

    def start(self) -> SSHDaemon:
        if not Path(SSHD).is_file():
            raise RuntimeError("sshd is not installed (apt-get install openssh-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key_line = _keygen(self.root / "host_key")
        self.client_key = self.root / "client_key"
        (self.root / "authorized_keys").write_text(_keygen(self.client_key) + "\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd insists on
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.root / 'host_key'}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "UsePAM no", "StrictModes no", "LogLevel VERBOSE", "MaxStartups 100", "MaxSessions 100",
            f"SetEnv DOCKER_HOST={self.docker_host}", "",
        ]))
        self._log_handle = self.log.open("ab")
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self._log_handle,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self._proc.returncode}: {self.log.read_text()[-1000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("sshd did not listen within 15 s")

    def logins(self) -> int:
        return self.log.read_text(errors="replace").count("Accepted publickey")

    def client_home(self, home: Path, alias: str, known: bool = True) -> Path:
        """A HOME whose ~/.ssh names this server as `alias` (and trusts its key unless known=False)."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        (ssh / "config").write_text(f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
                                    f"  IdentityFile {self.client_key}\n")
        algo, key = self.host_key_line.split()[:2]
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {algo} {key}\n" if known else "")
        return home

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)  # its own session: the daemon and its per-login children
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        self._proc = None
        if getattr(self, "_log_handle", None) is not None:
            self._log_handle.close()

    def __enter__(self) -> SSHDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
