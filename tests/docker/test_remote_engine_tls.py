"""A 'remote' engine over tcp://127.0.0.1 with mutual TLS behaves like the local socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import RolloutError
from pipeline.rollout.session import committed_versions, open_session
from tests.docker.conftest import docker_config
from tests.docker.tls_proxy import TLSEngineProxy, make_certs
from tests.rollout.models import MODEL
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e


def test_rollout_through_a_tls_engine_ignores_requests_ca_bundle(tmp_path: Path, serving_image, s3_versions,
                                                                  docker_client, monkeypatch):
    versions, storage = s3_versions
    certs = make_certs(tmp_path / "certs")
    port = free_port()
    # the gotcha: these machines export a CA bundle that does not know our engine's CA
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    cfg = docker_config(tmp_path, serving_image, storage)
    from pipeline.targets.docker import DockerTarget

    with TLSEngineProxy(certs, port) as proxy:
        try:
            store, _ = committed_versions(cfg, MODEL)
            session = open_session(cfg, MODEL, store=store, golden=versions.golden[1])
            report = session.machine.rollout(MODEL, 1)
            assert report.ok and report.served["labels"] == {"stable": 1}
            info = session.target.describe()
            assert info["engine"] == f"tcp://127.0.0.1:{port}" and info["running"]
            session.close()
            # the same container is visible through the local socket: one engine, two transports
            assert docker_client.containers.get(cfg.rollout.container_name).status == "running"
            # without a client certificate the engine refuses
            monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path / "nowhere"))
            with pytest.raises(RolloutError, match="TLS file missing"):
                DockerTarget(cfg.rollout).running()
            import socket
            import ssl

            ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            with pytest.raises((ssl.SSLError, OSError)):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                        if not tls.recv(100):
                            raise OSError("closed")
        finally:
            monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
            DockerTarget(cfg.rollout).destroy(volume=True)
    assert proxy.handshakes_refused >= 1
