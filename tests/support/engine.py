"""A local Docker engine for tests: started loopback-only if none is reachable, stopped again after.

The start script's state dir is private to the caller, so `stop` finds a pidfile only when
this caller's `start` launched the daemon (never one that CI or a developer runs).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import require_docker_env

SCRIPT = Path(__file__).resolve().parents[2] / "infra/scripts/dockerd.sh"


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires Docker (TFROLLOUT_REQUIRE_DOCKER=1)."""
    if require_docker_env():
        pytest.fail(f"Docker required (TFROLLOUT_REQUIRE_DOCKER=1) but {reason}")
    pytest.skip(reason)


@contextmanager
def local_engine(state_dir: Path) -> Iterator[Any]:
    """A docker SDK client for the local engine (proxy settings ignored)."""
    try:
        import docker
    except ImportError:
        unavailable("the docker SDK is not installed")
    env = {**os.environ, "DOCKERD_STATE_DIR": str(state_dir)}
    subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, timeout=60, env=env)
    try:
        try:
            client = docker.from_env(timeout=120)
            client.api.trust_env = False
            client.ping()
        except Exception as exc:  # noqa: BLE001
            unavailable(f"no Docker engine reachable: {exc}")
        yield client
        client.close()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60, env=env)
