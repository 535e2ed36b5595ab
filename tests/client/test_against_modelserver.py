"""The light client and verify against the project's own TF Serving-compatible server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Endpoint, ServedModel, verify_served
from serving.client import InputMismatchError, PredictionClient
from tests.client.conftest import REPO
from tests.support.procs import free_port, stop_process


@pytest.fixture(scope="module")
def modelserver(model_base: Path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "serving.modelserver.main", "--port", str(port),
                             "--rest_api_port", "0", "--host", "127.0.0.1", "--model_name", "demo",
                             "--model_base_path", str(model_base)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = f"127.0.0.1:{port}"
    try:
        with PredictionClient(target, deadline=5) as client:
            client.wait_until_available("demo", deadline=90)
        yield target
    finally:
        stop_process(proc)


def test_predict_metadata_status(modelserver: str, model_base: Path) -> None:
    golden = load_golden(model_base / "2")
    with PredictionClient(modelserver, deadline=20) as client:
        served = client.predict_detailed("demo", golden.inputs)
        assert served.version == 2  # default policy: latest version
        np.testing.assert_allclose(served.outputs["probabilities"], golden.outputs["probabilities"],
                                   atol=1e-6)
        assert client.metadata("demo")["serving_default"].inputs["inputs"].dtype == "DT_FLOAT"
        assert client.status("demo")[2]["state"] == "AVAILABLE"
        with pytest.raises(InputMismatchError, match="input 'inputs' expects DT_FLOAT"):
            client.predict("demo", {"inputs": np.zeros((1, 8, 8, 1), np.int32)})


def test_verify_passes_and_fails_against_modelserver(modelserver: str, model_base: Path) -> None:
    same = verify_served(Endpoint(modelserver), ServedModel("demo", version=2), load_golden(model_base / "2"),
                         Tolerance(atol=1e-6), batch_size=4)
    assert same["ok"] and same["max_abs_diff"] <= 1e-6
    other = verify_served(Endpoint(modelserver), ServedModel("demo", version=2), load_golden(model_base / "1"),
                          Tolerance(atol=1e-6), batch_size=4)
    assert not other["ok"] and other["worst"]["output"] == "probabilities"
