"""Process-level behaviour: dynamic batching merges concurrent requests and splits
results correctly; SIGTERM finishes in-flight requests and exits 0; a taken port
is an error (grpc.so_reuseport=0)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import tfs_config

from .conftest import REPO
from .models import INPUT, OUTPUT, SHAPE, reference_predict


def _req(x, name="demo"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
    return req


def _concurrent(server, xs):
    results, errors = [None] * len(xs), []

    def call(i):
        try:
            results[i] = tf.make_ndarray(server.predict.Predict(_req(xs[i]), timeout=30).outputs[OUTPUT])
        except grpc.RpcError as exc:
            errors.append(f"{exc.code()}: {exc.details()}")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    return threads, results, errors


def test_batching_merges_and_splits(demo_root, server_factory, tmp_path):
    params = tfs_config.write_text(tfs_config.build_batching_parameters(
        max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1), tmp_path / "batching.config")
    mon = tmp_path / "monitoring.config"
    tfs_config.write_text(tfs_config.build_monitoring_config(), mon)
    server = server_factory(["--model_name=demo", f"--model_base_path={demo_root / 'demo'}",
                             "--enable_batching", f"--batching_parameters_file={params}",
                             f"--monitoring_config_file={mon}"])
    server.wait_available("demo", 1)
    rng = np.random.default_rng(1)
    xs = [rng.random((int(rng.integers(1, 3)), *SHAPE), dtype=np.float32) for _ in range(12)]
    threads, results, errors = _concurrent(server, xs)
    for t in threads:
        t.join()
    assert errors == []
    want = reference_predict(demo_root / "demo" / "1", np.concatenate(xs))
    assert np.max(np.abs(np.concatenate(results) - want)) <= 1e-6  # each got its own rows back
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("GET", tfs_config.DEFAULT_PROMETHEUS_PATH)
    text = conn.getresponse().read().decode()
    sizes = [int(line.split('batch_size="')[1].split('"')[0]) for line in text.splitlines()
             if line.startswith(":tensorflow:serving:batching_session:processed_batch_size{")]
    assert sizes and max(sizes) > 2 and max(sizes) <= 8, text  # merged, never above max_batch_size
    try:
        server.predict.Predict(_req(np.zeros((9, *SHAPE), np.float32)), timeout=10)
        raise AssertionError("oversized batch accepted")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "larger than maximum input batch size 8" in exc.details()


def test_sigterm_finishes_in_flight_and_exits_zero(demo_root, server_factory, tmp_path):
    # a 1.5 s batch timeout holds requests in flight when SIGTERM arrives
    params = tfs_config.write_text(tfs_config.build_batching_parameters(
        max_batch_size=64, batch_timeout_micros=1_500_000), tmp_path / "batching.config")
    server = server_factory(["--model_name=demo", f"--model_base_path={demo_root / 'demo'}",
                             "--enable_batching", f"--batching_parameters_file={params}"], rest=False)
    server.wait_available("demo", 1)
    xs = [np.full((1, *SHAPE), i, np.float32) for i in range(4)]
    threads, results, errors = _concurrent(server, xs)
    time.sleep(0.5)
    started = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)  # the client channel stays open
    assert server.proc.wait(timeout=30) == 0, server.log()
    for t in threads:
        t.join()
    assert errors == [] and all(r is not None and r.shape == (1, 5) for r in results)
    assert time.monotonic() - started < 20
    assert "Server stopped" in server.log()


def test_port_in_use_is_an_error(shared_server, demo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1", f"--port={shared_server.port}",
         "--model_name=demo", f"--model_base_path={demo_root / 'demo'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Failed to bind" in proc.stderr
    assert shared_server.proc.poll() is None
