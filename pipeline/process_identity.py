"""Knowing a process by more than its pid, so a recycled pid is never signalled.

A pid alone names whichever process holds it now. A recorded `ProcessIdentity` adds
the kernel's start time of that process (clock ticks since boot, field 22 of
/proc/<pid>/stat), the boot it ran in, and a random instance token on its command
line: all three must still match before `tfrollout` sends a signal.
"""

from __future__ import annotations

import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def boot_id() -> str:
    """This boot's id: start times are only comparable within one boot."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the `(comm)` field, which may itself contain spaces or ')'."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks after boot); None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None  # field 22 of the whole line


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int) -> bool:
    """True for a live, non-zombie process (reaping it first if it is our own child)."""
    if pid <= 0:
        return False
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
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it was when we started it: pid + start time + boot + instance token."""

    pid: int
    start_ticks: int
    boot_id: str
    token: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ProcessIdentity | None:
        """None for anything that is not a complete identity (old or corrupt state files)."""
        try:
            return cls(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]), str(data["token"]))
        except (TypeError, KeyError, ValueError):
            return None

    @classmethod
    def of(cls, pid: int, token: str) -> ProcessIdentity | None:
        """The identity of a running pid (call right after starting it)."""
        ticks = start_ticks(pid)
        return None if ticks is None else cls(pid, ticks, boot_id(), token)

    def mismatch(self) -> str | None:
        """Why the pid is not (any more) this process; None when it still is."""
        if not pid_alive(self.pid):
            return f"pid {self.pid} is not running"
        if self.boot_id and self.boot_id != boot_id():
            return f"pid {self.pid} was recorded before a reboot"
        if start_ticks(self.pid) != self.start_ticks:
            return f"pid {self.pid} now belongs to a process started at another time"
        if self.token and not any(self.token in arg for arg in cmdline(self.pid)):
            return f"pid {self.pid} does not carry instance token {self.token[:8]}…"
        return None

    def alive(self) -> bool:
        return self.mismatch() is None

    def signal(self, signum: int = signal.SIGTERM) -> bool:
        """Send `signum` only if the pid is still this process; False (nothing sent) otherwise.

        A pidfd is opened before the check, so the process checked is the one signalled
        even if the pid is recycled in between.
        """
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        except OSError:  # kernel without pidfd: check-then-kill, a window of microseconds
            fd = -1
        try:
            if self.mismatch() is not None:
                return False
            if fd >= 0:
                signal.pidfd_send_signal(fd, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        finally:
            if fd >= 0:
                os.close(fd)
        return True
