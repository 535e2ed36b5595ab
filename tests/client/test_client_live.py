"""PredictionClient against a real gRPC server (the fake TF Serving process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serving.client import (
    InputMismatchError,
    ModelNotFoundError,
    PredictionClient,
    RequestFailedError,
    TargetUnavailableError,
    predict_many,
    run_load,
)
from tests.client.conftest import GOLDEN_REL, REPO, Served
from tests.support.procs import free_port


def _golden(served: Served, version: int) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(served.base / str(version) / GOLDEN_REL)
    return data["input.inputs"], data["output.probabilities"]


@pytest.fixture(scope="module")
def client(served: Served):
    with PredictionClient(served.target, deadline=20) as c:
        yield c


def test_predict_by_version_and_label_matches_golden(client: PredictionClient, served: Served) -> None:
    for version, label in ((1, "stable"), (2, "canary")):
        x, y = _golden(served, version)
        by_version = client.predict_detailed(served.model, {"inputs": x}, version=version)
        assert by_version.version == version
        np.testing.assert_allclose(by_version.outputs["probabilities"], y, atol=1e-6)
        by_label = client.predict(served.model, {"inputs": x}, label=label)
        np.testing.assert_allclose(by_label["probabilities"], y, atol=1e-6)


def test_default_version_is_the_latest(client: PredictionClient, served: Served) -> None:
    x, _ = _golden(served, 1)
    assert client.predict_detailed(served.model, {"inputs": x[:1]}).version == 2


def test_metadata_and_status(client: PredictionClient, served: Served) -> None:
    sig = client.metadata(served.model, version=1)["serving_default"]
    assert sig.inputs["inputs"].dtype == "DT_FLOAT"
    assert sig.inputs["inputs"].shape == (-1, 8, 8, 1)
    assert sig.outputs["probabilities"].shape == (-1, 5)
    status = client.status(served.model)
    assert {v: s["state"] for v, s in status.items()} == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert client.wait_until_available(served.model, version=1, deadline=5) == 1
    assert client.wait_until_available(served.model, deadline=5) == 2
    assert client.wait_until_available(served.model, label="stable", deadline=5) is None


def test_input_mismatch_is_caught_before_sending(client: PredictionClient, served: Served) -> None:
    with pytest.raises(InputMismatchError, match=r"input 'inputs' expects DT_FLOAT \[-1,8,8,1\], got DT_DOUBLE"):
        client.predict(served.model, {"inputs": np.zeros((1, 8, 8, 1))})
    with pytest.raises(InputMismatchError, match=r"expects DT_FLOAT \[-1,8,8,1\], got DT_FLOAT \[1,64\]"):
        client.predict(served.model, {"inputs": np.zeros((1, 64), np.float32)})
    with pytest.raises(InputMismatchError, match="missing input 'inputs'"):
        client.predict(served.model, {"pixels": np.zeros((1, 8, 8, 1), np.float32)})


def test_unknown_model_version_label_signature(client: PredictionClient, served: Served) -> None:
    x = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ModelNotFoundError, match="'nope'"):
        client.predict("nope", {"inputs": x})
    with pytest.raises(ModelNotFoundError, match="version 9"):
        client.predict(served.model, {"inputs": x}, version=9)
    with pytest.raises(RequestFailedError, match="label 'missing'.*INVALID_ARGUMENT"):
        client.predict(served.model, {"inputs": x}, label="missing")
    with pytest.raises(ModelNotFoundError, match="no signature 'other'"):
        client.predict(served.model, {"inputs": x}, signature="other")


def test_output_filter_and_unchecked_request(client: PredictionClient, served: Served) -> None:
    x, _ = _golden(served, 1)
    out = client.predict(served.model, {"inputs": x[:2]}, version=1, output_filter=["probabilities"],
                         check_signature=False)
    assert list(out) == ["probabilities"] and out["probabilities"].shape == (2, 5)


def test_unreachable_target_fails_fast_with_one_line() -> None:
    port = free_port()
    with PredictionClient(f"127.0.0.1:{port}", deadline=3, retries=2) as c:
        with pytest.raises(TargetUnavailableError, match=f"cannot reach 127.0.0.1:{port}") as info:
            c.status("demo")
    assert "\n" not in str(info.value)


def test_concurrent_helpers(client: PredictionClient, served: Served) -> None:
    x, y = _golden(served, 1)
    batches = [{"inputs": x[i:i + 4]} for i in range(0, 16, 4)]
    results = predict_many(client, served.model, batches, concurrency=3, version=1)
    np.testing.assert_allclose(np.concatenate([r["probabilities"] for r in results]), y, atol=1e-6)
    report = run_load(client, served.model, {"inputs": x[:1]}, concurrency=4, count=40, version=1)
    data = report.to_json()
    assert data["requests"] == 40 and data["ok"] == 40 and data["errors"] == {}
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["p99"]
    with pytest.raises(ModelNotFoundError):  # checked once, before the load starts
        run_load(client, "nope", {"inputs": x[:1]}, concurrency=2, duration_s=0.3)


def test_client_in_a_fresh_process_never_imports_tensorflow(served: Served) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import serving.client as sc
        with sc.PredictionClient({served.target!r}) as c:
            out = c.predict({served.model!r}, {{"inputs": np.ones((2, 8, 8, 1), np.float32)}}, version=1)
            c.metadata({served.model!r}); c.status({served.model!r})
        print(json.dumps({{"shape": list(out["probabilities"].shape),
                          "tf": sorted(m for m in sys.modules if m.startswith(("tensorflow", "tensorflow_serving")))}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["shape"] == [2, 5]
    assert "tensorflow.python" not in result["tf"]
    assert result["tf"] == []
