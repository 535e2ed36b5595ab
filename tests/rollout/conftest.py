"""Fixtures: tiny model versions in a file:// store, a config for a local target on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import DeployConfig, build_config
from tests.rollout.models import Versions, build_versions
from tests.support.procs import free_port


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    return build_versions(tmp_path_factory.mktemp("rollout-models"))


def local_config(tmp: Path, store_uri: str, **rollout: object) -> DeployConfig:
    port = free_port()
    return build_config({
        "storage": {"uri": store_uri},
        "rollout": {"target": "local", "local_dir": str(tmp / "serving"), "grpc_port": port,
                    "rest_port": 0, "load_timeout_s": 60, "verify_timeout_s": 30, **rollout},
        # 30 s: a restarted server (TF import + model load) took > 10 s on a busy 2-core CI box
        "verify": {"endpoint": f"127.0.0.1:{port}", "deadline_s": 30.0, "atol": 1e-5},
        "run": {"workdir": str(tmp / "work")},
    })


@pytest.fixture
def local_cfg(tmp_path: Path, versions: Versions) -> Iterator[DeployConfig]:
    """A local-target config; the server it starts is stopped (by pid) afterwards."""
    cfg = local_config(tmp_path, versions.store_uri)
    yield cfg
    from pipeline.targets import open_target

    open_target(cfg.rollout, cfg.run.workdir).stop()
