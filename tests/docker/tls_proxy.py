"""A mutual-TLS listener on 127.0.0.1 in front of the local engine's unix socket.

Why: adding `-H tcp://... --tlsverify` to dockerd means restarting the engine that other
processes (CI, other tests) share. This listener does what dockerd's TLS listener does —
requires a client certificate signed by our CA, then speaks the same Engine API bytes —
so the SDK's `tcp://` + `DOCKER_TLS_VERIFY` + `DOCKER_CERT_PATH` path is exercised end to end.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path


def make_certs(d: Path) -> Path:
    """CA, server cert (IP SAN 127.0.0.1) and client cert with openssl; returns the cert dir."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
        "-days", "1", "-subj", "/CN=tfrollout-test-ca")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server.ext"), ("client", "client.ext")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", ext)
    (d / "cert.pem").write_bytes((d / "client.pem").read_bytes())  # DOCKER_CERT_PATH layout
    (d / "key.pem").write_bytes((d / "client-key.pem").read_bytes())
    return d


class TLSEngineProxy:
    def __init__(self, certs: Path, port: int, unix_socket: str = "/var/run/docker.sock") -> None:
        self.port, self.unix_socket = port, unix_socket
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server-key.pem"))
        self.sock = socket.create_server(("127.0.0.1", port))
        self.handshakes_refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TLSEngineProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_refused += 1
            raw.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.unix_socket)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        t = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
        t.start()
        pump(conn, upstream)
        t.join(timeout=60)
        conn.close()
        upstream.close()
