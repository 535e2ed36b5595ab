"""The offline image under a real dockerd: built with one command
(infra/serving-image/build.sh, cached by tag), run like tensorflow/serving with
host networking, serves the demo export on gRPC and REST, stops gracefully."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.support.engine import local_engine
from tests.support.procs import free_port, port_open, wait_for

from .conftest import REPO
from .models import INPUT, OUTPUT, SHAPE, reference_predict, write_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def docker_client(tmp_path_factory):
    with local_engine(tmp_path_factory.mktemp("dockerd")) as client:
        yield client


@pytest.fixture(scope="module")
def image(docker_client):
    proc = subprocess.run([str(REPO / "infra/serving-image/build.sh")], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    tag = proc.stdout.strip().splitlines()[-1]
    assert tag.endswith(":tf" + tf.__version__)  # the tag carries the TF version
    return tag


def test_image_serves_demo_model(docker_client, image, tmp_path):
    write_model(tmp_path, "demo", 1)
    extra: list[str] = []
    grpc_port, rest_port = 8500, 8501
    if port_open(8500) or port_open(8501):  # someone else holds the defaults: appended flags win
        grpc_port, rest_port = free_port(), free_port()
        extra = [f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    container = docker_client.containers.run(
        image, command=extra, detach=True, network_mode="host",
        environment={"MODEL_NAME": "demo"}, volumes={str(tmp_path): {"bind": "/models", "mode": "ro"}})
    try:
        def ready() -> bool:
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/demo", timeout=2) as r:
                    return json.load(r)["model_version_status"][0]["state"] == "AVAILABLE"
            except OSError:
                return False

        assert wait_for(ready, 180, 0.5), container.logs().decode()[-4000:]
        x = np.random.default_rng(3).random((5, *SHAPE), dtype=np.float32)
        want = reference_predict(tmp_path / "demo" / "1", x)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "demo"
            req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
            resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout=30)
        assert np.max(np.abs(tf.make_ndarray(resp.outputs[OUTPUT]) - want)) <= 1e-6
        body = json.dumps({"instances": x.tolist()}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{rest_port}/v1/models/demo:predict", data=body), timeout=30) as r:
            assert np.max(np.abs(np.array(json.load(r)["predictions"]) - want)) <= 1e-6
        container.stop(timeout=20)
        assert container.wait(timeout=30)["StatusCode"] == 0  # SIGTERM handled: no SIGKILL (137)
    finally:
        container.remove(force=True)
