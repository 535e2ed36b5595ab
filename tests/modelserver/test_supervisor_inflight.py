"""Issue 22, item 3: when the supervised server dies mid-request, the supervisor's log
and state name what was running (model, signature, input dtypes and shapes), never
the tensor values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.modelserver.inflight import SLOT_BYTES, InflightRecord, read_inflight, request_meta
from tests.support.procs import free_port, stop_process, wait_for

from .conftest import REPO
from .models import SLOW_INPUT, write_slow_model

VALUE = 4.321  # seconds the slow model spins: must never appear in the log


def test_inflight_record_keeps_metadata_only_and_is_bounded(tmp_path):
    record = InflightRecord(tmp_path / "f")
    a = record.begin(request_meta("m", 3, "sig", {"x": np.full((2, 5), VALUE, np.float32)}))
    b = record.begin(request_meta("n" * 500, 1, "s", {f"in{i}": np.zeros(i) for i in range(20)}))
    got = read_inflight(tmp_path / "f")
    got.sort(key=lambda m: len(m["model"]))
    assert [m["model"] for m in got] == ["m", "n" * 64]
    assert got[0]["inputs"] == {"x": ["float32", [2, 5]]} and len(got[1]["inputs"]) == 8
    assert str(VALUE) not in (tmp_path / "f").read_text(errors="replace")
    record.end(a)
    assert [m["model"] for m in read_inflight(tmp_path / "f")] == ["n" * 64]
    record.end(b)
    assert read_inflight(tmp_path / "f") == [] and (tmp_path / "f").stat().st_size == 32 * SLOT_BYTES


def test_supervisor_logs_the_request_in_flight_when_the_server_is_killed(tmp_path):
    write_slow_model(tmp_path, "slow", 1)
    port = free_port()
    state = tmp_path / "supervisor.json"
    log = open(tmp_path / "supervisor.log", "wb")
    cmd = [sys.executable, "-m", "pipeline.targets.supervisor", "--state", str(state), "--instance", "t", "--",
           sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1", f"--port={port}",
           "--model_name=slow", f"--model_base_path={tmp_path / 'slow'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    sup = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "slow"
        req.inputs[SLOW_INPUT].CopyFrom(tf.make_tensor_proto(np.full(3, VALUE, np.float32)))
        warm = predict_pb2.PredictRequest()
        warm.CopyFrom(req)
        warm.inputs[SLOW_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.float32)))

        def ready() -> bool:
            try:
                stub.Predict(warm, timeout=2)
                return True
            except grpc.RpcError:
                return False

        assert wait_for(ready, 90, interval=0.3), (tmp_path / "supervisor.log").read_text()
        server_pid = json.loads(state.read_text())["server"]["pid"]
        call = threading.Thread(target=lambda: _ignore_errors(stub, req), daemon=True)
        call.start()
        inflight = state.with_name(state.name + ".inflight")
        assert wait_for(lambda: read_inflight(inflight) != [], 10, interval=0.05)
        os.kill(server_pid, signal.SIGKILL)
        text = lambda: (tmp_path / "supervisor.log").read_text(errors="replace")  # noqa: E731
        assert wait_for(lambda: "in flight at exit" in text(), 20, interval=0.1), text()
        line = next(ln for ln in text().splitlines() if "in flight at exit" in ln)
        assert "killed by SIGKILL" in text()
        assert "model=slow version=1 signature=serving_default inputs=seconds:float32[3]" in line, line
        recorded = json.loads(state.read_text())["last_inflight"]
        assert recorded and recorded[0]["inputs"] == {"seconds": ["float32", [3]]}
        assert str(VALUE) not in text() and str(VALUE) not in state.read_text()
        channel.close()
    finally:
        sup.send_signal(signal.SIGTERM)  # the supervisor stops its (restarted) server
        stop_process(sup, timeout=60)
        log.close()
        state_now = json.loads(state.read_text()) if state.exists() else {}
        pid = (state_now.get("server") or {}).get("pid")
        if pid:  # never leave a server behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _ignore_errors(stub, req) -> None:
    try:
        stub.Predict(req, timeout=30)
    except grpc.RpcError:
        pass
    time.sleep(0)
