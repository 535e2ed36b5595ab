"""--ssl_config_file: TF Serving's SSLConfig turns on TLS for gRPC (TCP and the UNIX
socket); client_verify requires a client certificate signed by custom_ca; REST stays
plain HTTP; a bad file is one fatal line and a nonzero exit, no traceback."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import tfs_config

from .conftest import REPO
from .models import INPUT, SHAPE


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer_key=None, issuer_name: str | None = None, ca: bool = False,
          san: bool = False) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    """A CA, a server cert for `localhost` and a client cert, all signed by the CA."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("tfrollout test CA", ca_key, ca=True)
    return {"ca": ca, "server_key": _pem_key(server_key),
            "server_cert": _cert("localhost", server_key, ca_key, "tfrollout test CA", san=True),
            "client_key": _pem_key(client_key),
            "client_cert": _cert("client", client_key, ca_key, "tfrollout test CA")}


def _ssl_file(tmp_path: Path, pki: dict[str, bytes], client_verify: bool) -> Path:
    cfg = tfs_config.build_ssl_config(pki["server_key"].decode(), pki["server_cert"].decode(),
                                      pki["ca"].decode(), client_verify)
    return tfs_config.write_text(cfg, tmp_path / f"ssl_{client_verify}.config")


def _predict(channel: grpc.Channel) -> float:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "demo"
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((1, *SHAPE), np.float32)))
    resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=10)
    return float(tf.make_ndarray(next(iter(resp.outputs.values()))).ravel()[0])


def _secure(port: int, pki: dict[str, bytes], client: bool) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"],
        private_key=pki["client_key"] if client else None,
        certificate_chain=pki["client_cert"] if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=[("grpc.ssl_target_name_override", "localhost")])


def _wait_secure(server, pki, client: bool) -> None:
    import time

    deadline = time.monotonic() + 60
    while True:
        assert server.proc.poll() is None, server.log()
        with _secure(server.port, pki, client) as ch:
            try:
                _predict(ch)
                return
            except grpc.RpcError as err:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{err}\n{server.log()}") from None
        time.sleep(0.3)


def test_tls_serves_tls_clients_only(demo_root, server_factory, tmp_path, pki):
    sock = tmp_path / "grpc.sock"
    server = server_factory([f"--model_base_path={demo_root / 'demo'}", "--model_name=demo",
                             f"--ssl_config_file={_ssl_file(tmp_path, pki, False)}",
                             f"--grpc_socket_path={sock}"])
    _wait_secure(server, pki, client=False)
    with _secure(server.port, pki, client=False) as ch:
        value = _predict(ch)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plain, pytest.raises(grpc.RpcError) as e:
        _predict(plain)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # the UNIX socket carries the same credentials (TF Serving adds both listeners with them)
    with grpc.insecure_channel(f"unix:{sock}") as plain_unix, pytest.raises(grpc.RpcError):
        _predict(plain_unix)
    # REST is untouched: plain HTTP still answers
    with urllib.request.urlopen(f"{server.rest}/v1/models/demo", timeout=10) as resp:
        assert json.loads(resp.read())["model_version_status"][0]["state"] == "AVAILABLE"
    assert isinstance(value, float)
    assert "(TLS)" in server.log()


def test_mutual_tls_requires_a_client_certificate(demo_root, server_factory, tmp_path, pki):
    server = server_factory([f"--model_base_path={demo_root / 'demo'}", "--model_name=demo",
                             f"--ssl_config_file={_ssl_file(tmp_path, pki, True)}"])
    _wait_secure(server, pki, client=True)
    with _secure(server.port, pki, client=False) as ch, pytest.raises(grpc.RpcError) as e:
        _predict(ch)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with _secure(server.port, pki, client=True) as ch:
        assert isinstance(_predict(ch), float)


@pytest.mark.parametrize("content", [None, 'server_key: "k"\nserver_cert: "c"\nno_such_field: 1\n'])
def test_bad_ssl_config_is_one_fatal_line(tmp_path, content):
    cfg = tmp_path / "ssl.config"
    if content is not None:
        cfg.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1",
                           "--port=0", f"--grpc_socket_path={tmp_path / 's'}", "--model_base_path=/nowhere",
                           f"--ssl_config_file={cfg}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 134, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Non-OK-status: ParseProtoTextFile<SSLConfig>(ssl_config_file, &ssl_config) status: ")
    if content is None:
        assert last.endswith(f"NOT_FOUND: {cfg}; No such file or directory")
    else:
        assert last.endswith(f"INVALID_ARGUMENT: Invalid protobuf file: '{cfg}'")
