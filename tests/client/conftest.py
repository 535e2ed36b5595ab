"""Shared fixtures: tiny SavedModels with a golden set, and fake TF Serving processes.

Servers are session-scoped (one process each for the whole tests/client run)
and always stopped by pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.procs import free_port, port_open, stop_process, wait_for

FAKE_TFS = Path(__file__).with_name("fake_tfs.py")
REPO = Path(__file__).resolve().parents[2]
MODEL = "demo"
GOLDEN_REL = Path("assets.extra") / "tfrollout_golden.npz"


@dataclass(frozen=True)
class Served:
    target: str
    model: str
    base: Path
    port: int


def build_model(path: Path, seed: int) -> None:
    """A softmax classifier with the demo's signature: inputs [-1,8,8,1] -> probabilities [-1,5]."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Demo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((64, 5)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(5).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="inputs")])
        def serve(self, inputs):
            logits = tf.matmul(tf.reshape(inputs, [-1, 64]), self.w) + self.b
            return {"probabilities": tf.nn.softmax(logits)}

    module = Demo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    inputs = rng.random((16, 8, 8, 1), dtype=np.float32)
    outputs = module.serve(tf.constant(inputs))["probabilities"].numpy()
    (path / GOLDEN_REL).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path / GOLDEN_REL, **{"input.inputs": inputs, "output.probabilities": outputs})


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1 and 2 of `demo` (different weights), each with its own golden set."""
    base = tmp_path_factory.mktemp("models") / MODEL
    for version, seed in ((1, 1), (2, 2)):
        build_model(base / str(version), seed)
    return base


def start_fake(base: Path, extra: list[str] | None = None, *, tls: bool = False) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_TFS), "--port", str(port), "--model_name", MODEL,
         "--model_base_path", str(base), "--labels", "stable=1,canary=2", *(extra or [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if not wait_for(lambda: proc.poll() is not None or port_open(port), timeout=90):
        stop_process(proc)
        pytest.fail("fake TF Serving did not open its port within 90 s")
    if proc.poll() is not None:
        pytest.fail(f"fake TF Serving exited: {proc.stderr.read().decode()[-2000:]}")
    return proc, port


@pytest.fixture(scope="session")
def served(model_base: Path) -> Iterator[Served]:
    """A plain-text fake TF Serving process for the whole session."""
    proc, port = start_fake(model_base)
    try:
        yield Served(f"127.0.0.1:{port}", MODEL, model_base, port)
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(directory: Path, name: str, ca: str, ext: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj",
             f"/CN={name}", "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=directory)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out",
                 f"{ca}.pem", "-days", "2", "-subj", f"/CN=tfrollout test {ca}", cwd=d)
    _issue(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                 d / "client.key", d / "other_ca.pem")


@pytest.fixture(scope="session")
def served_tls(model_base: Path, certs: Certs) -> Iterator[Served]:
    """A mutual-TLS fake TF Serving process (client certificate required)."""
    proc, port = start_fake(model_base, ["--tls_cert", str(certs.server_cert), "--tls_key",
                                         str(certs.server_key), "--tls_client_ca", str(certs.ca)])
    try:
        yield Served(f"127.0.0.1:{port}", MODEL, model_base, port)
    finally:
        stop_process(proc)
