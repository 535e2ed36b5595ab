"""Fixtures for storage tests: a real moto S3 server *process* on 127.0.0.1 and fake exports.

AWS settings from the developer's environment are replaced for the whole session so
no test can ever reach real AWS or read real credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import StorageConfig
from tests.support.procs import free_port, port_open, stop_process, wait_for

MOTO = Path(sys.executable).with_name("moto_server")
DUMMY_KEY, DUMMY_SECRET = "AKIATESTDUMMYKEY0001", "dummy-secret-never-printed-9f8e7d"
AWS_VARS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(scope="session", autouse=True)
def isolated_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Dummy keys, no shared config/credentials files, no instance metadata lookups."""
    empty = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for name in AWS_VARS:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(empty))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name in list(os.environ):
            if name.startswith("TFROLLOUT_"):
                mp.delenv(name)
        yield


@dataclass
class MotoServer:
    """A moto_server process; `kill()` / `restart()` simulate an S3 outage (state is in memory)."""

    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: port_open(self.port), timeout=15):
            self.stop()
            raise RuntimeError(f"moto_server did not start on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL by pid: no graceful shutdown, like a crashed server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def client(self, key: str = DUMMY_KEY, secret: str = DUMMY_SECRET):  # noqa: ANN201 - boto3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)


def start_moto(extra_env: dict[str, str] | None = None) -> MotoServer:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra_env or {})
    return MotoServer(free_port(), env).start()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A fresh bucket per test, so tests never see each other's versions."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=name)
    return name


def s3_config(server: MotoServer, bucket: str, **overrides: object) -> StorageConfig:
    """Path-style addressing, small retry budget: fast, deterministic failures."""
    base: dict[str, object] = {"uri": f"s3://{bucket}/models", "endpoint_url": server.endpoint,
                               "region": "us-east-1", "addressing_style": "path", "max_attempts": 2,
                               "connect_timeout_s": 1.0, "read_timeout_s": 10.0}
    base.update(overrides)
    return StorageConfig.model_validate(base)


def write_version(root: Path, name: str = "digits", version: int = 1, *, data_size: int = 40_000,
                  seed: int = 0, extra: dict[str, int] | None = None) -> Path:
    """A fake TF Serving export: the five files the export stage writes (random bytes)."""
    vdir = root / name / str(version)

    def blob(size: int, tag: str) -> bytes:
        return random.Random(f"{seed}:{tag}").randbytes(size)

    files = {"saved_model.pb": 3_000, "variables/variables.data-00000-of-00001": data_size,
             "variables/variables.index": 300, "assets.extra/tf_serving_warmup_requests": 500,
             **(extra or {})}
    for rel, size in files.items():
        path = vdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob(size, rel))
    (vdir / "tfrollout.json").write_text(json.dumps({
        "format": "tfrollout.export/1", "model_name": name, "version": version,
        "signature": "serving_default", "metrics": {"accuracy": 0.8}, "exported_at": "2025-01-01T00:00:00Z"}))
    return vdir


def tree_digests(root: Path, exclude: tuple[str, ...] = ("tfrollout.manifest.json",)) -> dict[str, str]:
    """{relative path: sha256} of every file under `root`."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in exclude}
