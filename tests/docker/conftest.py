"""Docker e2e fixtures: a reachable engine (started loopback-only if needed), the offline image,
a moto S3 process holding the test versions, and unique container/volume names cleaned up after.

Skips only when no engine is reachable AND TFROLLOUT_REQUIRE_DOCKER is unset; in CI it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import DeployConfig, build_config
from tests.rollout.models import Versions, build_versions
from tests.storage.conftest import DUMMY_KEY, DUMMY_SECRET, MotoServer
from tests.support.engine import local_engine, unavailable
from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with local_engine(tmp_path_factory.mktemp("dockerd")) as client:
        yield client


@pytest.fixture(scope="session")
def serving_image(docker_client) -> str:
    proc = subprocess.run(["bash", str(ROOT / "infra/serving-image/build.sh")], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        unavailable(f"offline serving image could not be built: {proc.stderr[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    env = {"AWS_ACCESS_KEY_ID": DUMMY_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


@pytest.fixture(scope="session")
def moto(aws_env) -> Iterator[MotoServer]:
    server = MotoServer(free_port(), {**os.environ, **aws_env}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_versions(tmp_path_factory, moto: MotoServer) -> tuple[Versions, dict]:
    """The test versions pushed to a bucket on the moto server."""
    from pipeline.config import StorageConfig
    from pipeline.storage import open_store
    from pipeline.storage.publish import push_version
    from tests.rollout.models import MODEL

    versions = build_versions(tmp_path_factory.mktemp("docker-models"))
    storage = {"uri": "s3://tfr-rollout/models", "endpoint_url": moto.endpoint, "create_bucket": True,
               "max_attempts": 2, "connect_timeout_s": 1.0}
    store = open_store(StorageConfig(**storage))
    for version, d in versions.dirs.items():
        push_version(store, d, MODEL, version, create=True)
    return versions, storage


def docker_config(tmp: Path, image: str, storage: dict, **rollout: object) -> DeployConfig:
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    return build_config({
        "storage": storage,
        "rollout": {"target": "docker", "image": image, "pull_image": False, "grpc_port": port,
                    "rest_port": free_port(), "container_name": f"tfr-test-{tag}", "volume": f"tfr-test-{tag}",
                    "network_mode": "host", "load_timeout_s": 90, "start_timeout_s": 120, **rollout},
        "verify": {"endpoint": f"127.0.0.1:{port}", "deadline_s": 15.0, "atol": 1e-5},
        "run": {"workdir": str(tmp / "work")},
    })


@pytest.fixture
def docker_cfg(tmp_path: Path, serving_image: str, s3_versions) -> Iterator[DeployConfig]:
    cfg = docker_config(tmp_path, serving_image, s3_versions[1])
    yield cfg
    from pipeline.targets.docker import DockerTarget

    DockerTarget(cfg.rollout).destroy(volume=True)
