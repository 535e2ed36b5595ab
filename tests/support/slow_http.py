"""Slow HTTP clients for the in-flight budget tests and bench: many connections each
holding part of a large JSON body open at once (issue 27 item 4)."""

from __future__ import annotations

import socket
import threading

MIB = 1 << 20
_PREFIX = b'{"instances": ['
_FILLER = b"[0.0]," * (MIB // 6)


def slow_bodies(port: int, path: str, clients: int, held: int, declared: int) -> list[bytes]:
    """`clients` connections each send `held` bytes of a `declared`-byte predict body,
    wait until all have, then send the rest; the raw HTTP answers, in connection order.
    A server that buffers bodies before charging them holds clients × held bytes at the
    moment they all wait."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(clients)]
    try:
        for sock in socks:
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (path.encode(), declared, _PREFIX))
        threads = [threading.Thread(target=_send, args=(s, held - len(_PREFIX))) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        answers = []
        for sock in socks:
            rest = declared - held
            _send(sock, rest - 1, b" ")  # the server keeps or discards it
            sock.sendall(b"]")
            sock.shutdown(socket.SHUT_WR)
            answers.append(sock.makefile("rb").read())
        return answers
    finally:
        for sock in socks:
            sock.close()


def _send(sock: socket.socket, nbytes: int, fill: bytes | None = None) -> None:
    chunk = _FILLER if fill is None else fill * len(_FILLER)
    sent = 0
    try:
        while sent < nbytes:
            piece = chunk[:nbytes - sent]
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):  # the server answered and closed early
        pass
