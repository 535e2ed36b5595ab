"""HandleReloadConfigRequest through the light client (and ServingHost on top of it) against a
real `tfrollout-model-server` process, plus the refusal paths a real server cannot show."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from pipeline.errors import RolloutError
from pipeline.rollout.host import ServingHost
from pipeline.rollout.plan import Served
from serving import tfs_config
from serving.client import (
    DeadlineError,
    LoadFailedError,
    PredictionClient,
    RequestFailedError,
    TargetUnavailableError,
)
from serving.client._generated import tfrollout_wire_pb2 as wire
from tests.client.conftest import MODEL, REPO
from tests.support.procs import free_port, port_open, stop_process, wait_for

X = {"inputs": np.zeros((1, 8, 8, 1), np.float32)}
NOT_AVAILABLE = ("Request to assign label to version 7 of model demo, which is not currently "
                 "available for inference (label: stable)")


def _config(base: Path, versions: tuple[int, ...], labels: dict[str, int]) -> bytes:
    entry = tfs_config.ModelEntry(MODEL, str(base), versions=versions, labels=labels)
    return tfs_config.build_model_server_config([entry]).SerializeToString()


def _server_command() -> list[str]:
    script = Path(sys.executable).with_name("tfrollout-model-server")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "serving.modelserver.main"]


@pytest.fixture(scope="module")
def base(model_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of versions 1 and 2 (tests add a broken version 3 to it)."""
    copy = tmp_path_factory.mktemp("reload") / MODEL
    for version in (1, 2):
        shutil.copytree(model_base / str(version), copy / str(version))
    return copy


@pytest.fixture(scope="module")
def server(base: Path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([*_server_command(), "--port", str(port), "--rest_api_port", "0",
                             "--host", "127.0.0.1", "--model_name", MODEL, "--model_base_path", str(base),
                             "--file_system_poll_wait_seconds", "0", "--max_num_load_retries", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = f"127.0.0.1:{port}"
    try:
        if not wait_for(lambda: proc.poll() is not None or port_open(port), timeout=90):
            pytest.fail("tfrollout-model-server did not open its port within 90 s")
        with PredictionClient(target, deadline=5) as client:
            client.wait_until_available(MODEL, version=2, deadline=90)
        yield target
    finally:
        stop_process(proc)


def test_reload_changes_the_served_labels(server: str, base: Path) -> None:
    with PredictionClient(server, deadline=20) as client:
        client.reload_config(_config(base, (1, 2), {"stable": 1, "canary": 2}), deadline=60)
        assert client.predict_detailed(MODEL, X, label="stable").version == 1
        assert client.predict_detailed(MODEL, X, label="canary").version == 2

        client.reload_config(_config(base, (2,), {"stable": 2}), deadline=60)
        assert client.predict_detailed(MODEL, X, label="stable").version == 2
        with pytest.raises(RequestFailedError, match="Unrecognized servable version label: canary"):
            client.predict(MODEL, X, label="canary")
        states = {v: s["state"] for v, s in client.status(MODEL).items()}
        assert states == {1: "END", 2: "AVAILABLE"}


def test_refused_reload_raises_with_the_servers_message(server: str, base: Path) -> None:
    with PredictionClient(server, deadline=20) as client:
        client.reload_config(_config(base, (2,), {"stable": 2}), deadline=60)
        with pytest.raises(RequestFailedError) as err:
            client.reload_config(_config(base, (2,), {"stable": 7}), deadline=60)
        assert err.value.code == "FAILED_PRECONDITION"
        assert err.value.details == NOT_AVAILABLE
        assert str(err.value) == f"config reload failed (FAILED_PRECONDITION): {NOT_AVAILABLE}"
        assert client.predict_detailed(MODEL, X, label="stable").version == 2  # old labels kept


class StubTarget:
    """Just what ServingHost.apply/states/start need: an endpoint and a config file."""

    def __init__(self, endpoint: str, base: Path, config: Path) -> None:
        self.endpoint, self._base, self._file = endpoint, base, config
        self.starts = 0

    def base_path(self, model: str) -> str:
        return str(self._base)

    def admin_token(self) -> str | None:  # the test server's ModelService is open
        return None

    def read_config(self) -> str | None:
        return self._file.read_text() if self._file.is_file() else None

    def write_config(self, text: str | None) -> None:
        self._file.write_text(text or "")

    def start(self) -> None:
        self.starts += 1

    def running(self) -> bool:
        return True


def test_serving_host_reloads_reads_states_and_maps_refusals(server: str, base: Path, tmp_path: Path) -> None:
    (base / "3").mkdir(exist_ok=True)
    (base / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    target = StubTarget(server, base, tmp_path / "models.config")
    host = ServingHost(target, None)  # type: ignore[arg-type]
    try:
        host.start(None, 10)  # the runtime's port answers: start returns at once
        host.apply(Served(MODEL, (1, 2), {"stable": 1, "canary": 2}), 60)
        assert host.read(MODEL) == Served(MODEL, (1, 2), {"stable": 1, "canary": 2})  # persisted
        assert host.states(MODEL, 5) == {1: ("AVAILABLE", ""), 2: ("AVAILABLE", "")}
        assert host.states("nope", 5) == {}

        with pytest.raises(RolloutError) as err:  # version 3 fails to load, so its label is refused
            host.apply(Served(MODEL, (2, 3), {"stable": 2, "canary": 3}), 60)
        message = str(err.value)
        assert message.startswith(f"config reload on {server} failed: FAILED_PRECONDITION: ")
        assert "version 3 of model demo" in message
        assert host.read(MODEL) == Served(MODEL, (1, 2), {"stable": 1, "canary": 2})  # not persisted
        state, error = host.states(MODEL, 5)[3]
        assert state == "END" and error
        with PredictionClient(server, deadline=10) as client:
            with pytest.raises(LoadFailedError, match="version 3 failed to load"):
                client.wait_until_available(MODEL, version=3, deadline=10)
    finally:
        host.close()
        shutil.rmtree(base / "3", ignore_errors=True)


def test_serving_host_maps_an_unreachable_runtime(tmp_path: Path) -> None:
    target = StubTarget(f"127.0.0.1:{free_port()}", tmp_path, tmp_path / "models.config")
    host = ServingHost(target, None)  # type: ignore[arg-type]
    try:
        with pytest.raises(RolloutError, match=r"^config reload on 127\.0\.0\.1:\d+ failed: UNAVAILABLE: "):
            host.apply(Served(MODEL, (1,), {}), 2)
        with pytest.raises(RolloutError, match=r"^status of demo on 127\.0\.0\.1:\d+ failed: UNAVAILABLE: "):
            host.states(MODEL, 1)
        assert not host.client.ready(0.2)
    finally:
        host.close()


# ---------------------------------------------------------------- an in-process ModelService


class Scripted:
    """HandleReloadConfigRequest answering with a scripted status (or sleeping); counts calls."""

    def __init__(self, error_code: int = 0, message: str = "", sleep_s: float = 0.0) -> None:
        self.error_code, self.message, self.sleep_s = error_code, message, sleep_s
        self.received: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, request: wire.ReloadConfigRequest, context: grpc.ServicerContext) -> wire.ReloadConfigResponse:
        with self.lock:
            self.received.append(request.config)
        time.sleep(self.sleep_s)
        response = wire.ReloadConfigResponse()
        response.status.error_code, response.status.error_message = self.error_code, self.message
        return response


@pytest.fixture
def scripted():
    handler = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    method = grpc.unary_unary_rpc_method_handler(handler, request_deserializer=wire.ReloadConfigRequest.FromString,
                                                 response_serializer=lambda m: m.SerializeToString())
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "tensorflow.serving.ModelService", {"HandleReloadConfigRequest": method})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield handler, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_status_only_refusal_is_raised_and_the_bytes_arrive_unchanged(scripted, base: Path) -> None:
    handler, target = scripted
    config = _config(base, (1,), {"stable": 1})
    with PredictionClient(target, deadline=5) as client:
        client.reload_config(config)
        handler.error_code, handler.message = 3, "ServerModelConfig type not supported"
        with pytest.raises(RequestFailedError) as err:
            client.reload_config(config)
    assert handler.received == [config, config]
    assert (err.value.code, err.value.details) == ("INVALID_ARGUMENT", "ServerModelConfig type not supported")


def test_a_timed_out_reload_is_not_resent(scripted, base: Path) -> None:
    handler, target = scripted
    handler.sleep_s = 1.0
    with PredictionClient(target, deadline=5, retries=5) as client:
        with pytest.raises(DeadlineError) as err:
            client.reload_config(_config(base, (1,), {}), deadline=0.3)
    assert err.value.code == "DEADLINE_EXCEEDED" and len(handler.received) == 1


def test_reload_to_nothing_is_unavailable() -> None:
    with PredictionClient(f"127.0.0.1:{free_port()}", deadline=2, retries=1) as client:
        with pytest.raises(TargetUnavailableError):
            client.reload_config(b"")
