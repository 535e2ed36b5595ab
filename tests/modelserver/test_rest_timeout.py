"""--rest_api_timeout_in_ms, as in TF Serving: it bounds each REST predict run
(RunOptions.timeout_in_ms). An expired run answers 504 with TF's DEADLINE_EXCEEDED
text; with batching, a request whose time ran out while still queued is dropped
with 429 RESOURCE_EXHAUSTED. Status/metadata calls and gRPC are not bounded by it.
Real server processes, plain HTTP."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from serving import tfs_config

from .models import SLOW_INPUT, SLOW_OUTPUT, predict_request, write_slow_model

DEADLINE = {"error": "Timed out waiting for notification"}
QUEUE_TIMEOUT = {"error": "Run() timeout exceeded while waiting in batching queue"}


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory):
    """<root>/slow/1: predict busy-waits as many seconds as its input says."""
    root = tmp_path_factory.mktemp("slow-models")
    write_slow_model(root, "slow", 1)
    return root


def _predict(server, seconds: float) -> tuple[int, dict, float]:
    """POST :predict over plain HTTP: (status, JSON body, elapsed seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    started = time.monotonic()
    conn.request("POST", "/v1/models/slow:predict", body=json.dumps({"instances": [seconds]}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    elapsed = time.monotonic() - started
    conn.close()
    return resp.status, doc, elapsed


def _get(server, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("GET", path)
    status = conn.getresponse().status
    conn.close()
    return status


def _start(server_factory, slow_root, *extra: str):
    server = server_factory(["--model_name=slow", f"--model_base_path={slow_root / 'slow'}", *extra])
    server.wait_available("slow", 1)
    return server


def test_expired_predict_answers_504_at_the_deadline(slow_root, server_factory):
    server = _start(server_factory, slow_root, "--rest_api_timeout_in_ms=400")
    status, doc, elapsed = _predict(server, 3.0)
    assert (status, doc) == (504, DEADLINE)
    assert 0.4 <= elapsed < 2.0  # answered at the deadline, not when the 3 s run ended
    # a run inside the budget is untouched, even while the expired one still spins
    status, doc, _ = _predict(server, 0.0)
    assert (status, doc) == (200, {"predictions": [0.0]})
    # status and metadata are not predict runs: not bounded
    assert _get(server, "/v1/models/slow") == 200
    assert _get(server, "/v1/models/slow/metadata") == 200
    # the flag is the REST timeout only: gRPC runs past it
    req = predict_request("slow", np.array([1.0], np.float32), alias=SLOW_INPUT)
    out = server.predict.Predict(req, timeout=30).outputs[SLOW_OUTPUT]
    assert tf.make_ndarray(out).tolist() == [1.0]


def test_zero_means_no_timeout(slow_root, server_factory):
    server = _start(server_factory, slow_root, "--rest_api_timeout_in_ms=0")
    status, doc, elapsed = _predict(server, 1.0)
    assert (status, doc) == (200, {"predictions": [1.0]})
    assert elapsed >= 1.0


def test_batching_queue_timeout_and_run_timeout(slow_root, server_factory, tmp_path):
    # one batch thread, batches of one: a second request waits behind a running one
    params = tfs_config.write_text(tfs_config.build_batching_parameters(
        max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1), tmp_path / "batching.config")
    server = _start(server_factory, slow_root, "--rest_api_timeout_in_ms=500",
                    "--enable_batching", f"--batching_parameters_file={params}")
    results: dict[str, tuple[int, dict, float]] = {}

    def call(key: str, seconds: float) -> None:
        results[key] = _predict(server, seconds)

    running = threading.Thread(target=call, args=("running", 2.5))
    running.start()
    time.sleep(0.2)  # the 2.5 s run has the only batch thread now
    call("queued", 0.0)
    running.join()
    assert results["running"][:2] == (504, DEADLINE)
    assert results["queued"][:2] == (429, QUEUE_TIMEOUT)
    assert results["queued"][2] < 2.0  # answered at its deadline, not after the running batch
    # once the slow run ends, the batch thread serves again
    time.sleep(2.5)
    status, doc, _ = _predict(server, 0.0)
    assert (status, doc) == (200, {"predictions": [0.0]})
