"""Fixtures: tiny SavedModels on disk and real model-server subprocesses on 127.0.0.1,
driven with the official tensorflow-serving-api stubs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tests.support.procs import free_port, stop_process, wait_for

from .models import write_model

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE = 1 << 20  # small gRPC receive limit so "oversized" is cheap to test


class ServerProc:
    """A `python -m serving.modelserver.main` subprocess bound to 127.0.0.1."""

    def __init__(self, args: list[str], log_path: Path, rest: bool = True):
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.log_path = log_path
        cmd = [sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1",
               f"--port={self.port}", f"--rest_api_port={self.rest_port}", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def states(self, name: str) -> dict[int, int]:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        try:
            resp = self.models.GetModelStatus(req, timeout=5)
        except grpc.RpcError:
            return {}
        return {s.version: s.state for s in resp.model_version_status}

    def wait_available(self, name: str, version: int | None = None, timeout: float = 90) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"server exited:\n{self.log()}"
            st = self.states(name)
            avail = [v for v, s in st.items() if s == 30]
            return bool(avail) if version is None else version in avail

        if not wait_for(ready, timeout, interval=0.2):
            raise AssertionError(f"model {name} v{version} not AVAILABLE in {timeout}s:\n{self.log()}")

    def stop(self) -> int | None:
        self.channel.close()
        stop_process(self.proc, timeout=30)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """<root>/demo/1 — read-only model tree shared by the session's servers."""
    root = tmp_path_factory.mktemp("models")
    write_model(root, "demo", 1)
    return root


@pytest.fixture(scope="session")
def shared_server(demo_root, tmp_path_factory):
    """One server for the read-only API tests: REST, metrics, small message limit."""
    mon = tmp_path_factory.mktemp("mon") / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    server = ServerProc([
        "--model_name=demo", f"--model_base_path={demo_root / 'demo'}",
        f"--monitoring_config_file={mon}",
        f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_MESSAGE}",
    ], tmp_path_factory.mktemp("logs") / "shared.log")
    try:
        server.wait_available("demo", 1)
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(tmp_path):
    """Start extra servers in a test; all are stopped (by pid) afterwards."""
    started: list[ServerProc] = []

    def start(args: list[str], rest: bool = True) -> ServerProc:
        server = ServerProc(args, tmp_path / f"server{len(started)}.log", rest=rest)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()
