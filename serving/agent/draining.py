"""Draining a stopping replica before its server sees SIGTERM.

Why: a gRPC server that stops while clients keep sending on their connections races them — an
RPC sent just before the client reads the GOAWAY is answered CANCELLED/UNAVAILABLE (a plain
`stop(grace)` lost 5 of ≈9k requests in a bare grpcio test here, and 6-16 per v1->v2 rollout of
3 replicas). So the agent first takes the server's listening socket out of the port's
SO_REUSEPORT group (a dup of it through `pidfd_getfd`, then `shutdown(SHUT_RD)`: new connections
go to the siblings), waits until the server's connections are gone (the server runs with
`grpc.max_connection_age_ms`, so each connection gets a graceful GOAWAY within that age and the
client reconnects to a sibling), and only then forwards SIGTERM. `pidfd_getfd` needs
CAP_SYS_PTRACE in the container (the spec adds it); without it the agent logs that and stops at once.
"""

from __future__ import annotations

import os
import time

PIDFD_GETFD = 438  # the same number on every Linux architecture with the unified syscall table
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def _inet_sockets(port: int, state: str) -> set[str]:
    """Inodes of TCP sockets on local `port` in `state` ("0A" LISTEN, "01" ESTABLISHED)."""
    out: set[str] = set()
    suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[1].endswith(suffix) and cols[3] == state:
                out.add(cols[9])
    return out


def _fds_of(pid: int, inodes: set[str]) -> list[int]:
    fds = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            fds.append(int(name))
    return fds


def stop_listening(pid: int, port: int) -> int:
    """Take `pid`'s listeners on `port` out of the SO_REUSEPORT group; how many were closed."""
    import ctypes
    import socket

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    closed = 0
    try:
        for fd in _fds_of(pid, _inet_sockets(port, "0A")):
            dup = libc.syscall(PIDFD_GETFD, pidfd, fd, 0)
            if dup < 0:
                raise OSError(ctypes.get_errno(), f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
            with socket.socket(fileno=dup) as sock:
                sock.shutdown(socket.SHUT_RD)  # a listener leaves the group; its own accept loop just ends
            closed += 1
    finally:
        os.close(pidfd)
    return closed


def migrates_queued_connections(path: str = MIGRATE_REQ) -> bool | None:
    """net.ipv4.tcp_migrate_req (Linux >= 5.14) of this network namespace: when 1, connections
    the kernel already queued on a listener that leaves its SO_REUSEPORT group move to a
    sibling; when 0 they are reset (a client then sees UNAVAILABLE until it reconnects).
    None: the kernel has no such setting."""
    try:
        with open(path) as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def drain(pid: int, port: int, timeout_s: float) -> str:
    """Stop new connections to this replica, then wait for its connections to be GOAWAY'd away."""
    migrate = migrates_queued_connections()
    try:
        closed = stop_listening(pid, port)
    except OSError as exc:
        return f"no drain ({exc}; the container needs CAP_SYS_PTRACE for pidfd_getfd)"
    deadline = time.monotonic() + timeout_s
    left = _fds_of(pid, _inet_sockets(port, "01"))
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _fds_of(pid, _inet_sockets(port, "01"))
    warning = "" if migrate else ("; net.ipv4.tcp_migrate_req is not 1 on this host: connections queued at "
                                  "the listener were reset, not moved to a sibling")
    return f"closed {closed} listener(s); {len(left)} connection(s) left after the drain{warning}"
