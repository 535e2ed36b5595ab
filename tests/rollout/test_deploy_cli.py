"""`tfrollout deploy` as `make deploy` runs it: local target + file store, twice, then predict/status/stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import TFROLLOUT
from tests.support.deploy_cli import quick_transfer_env
from tests.support.procs import free_port

pytestmark = pytest.mark.e2e

REPO_CONFIG = Path(__file__).resolve().parents[2] / "deploy.toml"
# Runs the console script's `main` in-process and reports, at exit, whether TensorFlow was imported.
WITH_MODULE_REPORT = ("import atexit, sys\n"
                      "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules,"
                      " file=sys.stderr))\n"
                      "sys.argv = ['tfrollout', *sys.argv[1:]]\n"
                      "from pipeline.entry import main\n"
                      "main()\n")


def test_deploy_twice_first_deploy_then_canary_promote_and_predict(tmp_path: Path, demo_source_model: Path):
    port = free_port()
    env = quick_transfer_env(demo_source_model, TFROLLOUT_GATE__MIN_ACCURACY="0",
                             TFROLLOUT_ROLLOUT__GRPC_PORT=str(port), TFROLLOUT_ROLLOUT__REST_PORT="0",
                             TFROLLOUT_VERIFY__ENDPOINT=f"127.0.0.1:{port}")

    def cli(*args: str, check: bool = True, without_tf: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", WITH_MODULE_REPORT] if without_tf else [TFROLLOUT]
        proc = subprocess.run([*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert not check or proc.returncode == 0, proc.stderr[-3000:]
        if without_tf:  # status, rollback and serve stop must not pay for TensorFlow
            assert "tensorflow imported: False" in proc.stderr, proc.stderr[-3000:]
        return proc

    try:
        first = json.loads(cli("deploy", "--config", str(REPO_CONFIG), "--json").stdout)
        assert first["ran"] == ["load", "transfer", "gate", "export", "push", "rollout", "verify"]
        assert first["stages"]["rollout"]["outputs"]["action"] == "first-deploy"
        nothing = cli("rollback", without_tf=True)  # one version only: an explicit no-op, exit 0
        assert "nothing to roll back" in nothing.stdout and "stable stays v1" in nothing.stdout
        # the update is an int8 export: quantization, its gate, canary verify and verify end to end
        second = json.loads(cli("deploy", "--config", str(REPO_CONFIG), "--json",
                                "--set", "export.quantize=int8").stdout)
        manifest = json.loads(Path(second["stages"]["export"]["outputs"]["manifest"]).read_text())
        assert manifest["quantization"]["mode"] == "int8" and manifest["quantization"]["layers_changed"]
        assert manifest["quantization"]["accuracy"]["drop"] <= 0.01  # deploy.toml's gate let it through
        gate = second["stages"]["gate"]["outputs"]  # the second run is scored against what is served
        assert gate["serving_version"] == 1 and gate["serving_note"] is None
        assert gate["serving_accuracy"] == first["stages"]["gate"]["outputs"]["accuracy"]
        assert [c["name"] for c in gate["checks"]] == ["min_accuracy", "max_drop_vs_serving"]
        rollout = second["stages"]["rollout"]["outputs"]
        assert rollout["action"] == "update" and rollout["previous"] == 1 and rollout["version"] == 2
        assert rollout["served"] == {"model": "digits", "versions": [2], "labels": {"stable": 2}}
        assert second["stages"]["verify"]["outputs"]["served_versions"] == [2]
        canary_gate = json.loads((tmp_path / rollout["report"]).read_text())["verify"]["gate"]
        assert canary_gate["passed"] and canary_gate["examples"] > 0  # scored on the served canary
        assert canary_gate["stable_accuracy"] == pytest.approx(gate["serving_accuracy"], abs=0.2)

        # the gate again before promote: a canary below the bar is not promoted, stable stays
        third = json.loads(cli("deploy", "--config", str(REPO_CONFIG), "--json", "--until", "push").stdout)
        assert third["stages"]["push"]["outputs"]["version"] == 3
        refused = cli("deploy", "--config", str(REPO_CONFIG), "--json", "--from", "rollout", "--until",
                      "rollout", "--set", "gate.min_accuracy=0.999", check=False)
        assert refused.returncode != 0
        assert "quality gate before promote: canary accuracy" in refused.stderr
        assert "< min_accuracy 0.999" in refused.stderr
        status = json.loads(cli("status", "--json", without_tf=True).stdout)
        assert status["config"]["labels"] == {"stable": 2}

        sample = json.loads(cli("demo", "sample", "--out", "x.npy", "--json").stdout)  # the README's recipe
        predicted = json.loads(cli("predict", "-i", "x.npy", "--json").stdout)
        assert predicted["version"] == 2 and predicted["outputs"]["probabilities"]["shape"] == [4, 10]  # ten digits
        assert predicted["classes"] == [str(d) for d in range(10)] and len(predicted["predicted"]) == 4
        named = [int(text.split()[0]) for text in predicted["predicted"]]
        values = predicted["outputs"]["probabilities"]["values"]
        assert named == [row.index(max(row)) for row in values] and len(sample["digits"]) == 4
        status = json.loads(cli("status", "--json", without_tf=True).stdout)
        assert status["running"] and status["config"]["labels"] == {"stable": 2}
        assert status["states"]["2"] == "AVAILABLE" and status["on_host"] == [1, 2, 3]  # v3 refused, kept
        # each version's evaluation, as its committed manifest records it
        evaluation = status["evaluation"]
        assert set(evaluation) == {"1", "2", "3"} and status["evaluation_error"] is None
        assert evaluation["2"]["metrics"]["test_accuracy"] == gate["accuracy"]
        assert evaluation["2"]["summary"].startswith(f"acc {gate['accuracy']:.3f}")
        assert evaluation["2"]["quality_gate"]["passed"] is True
        assert f"v2: acc {gate['accuracy']:.3f}" in cli("status", without_tf=True).stdout
        back = json.loads(cli("rollback", "--json", without_tf=True).stdout)
        assert back["action"] == "rollback" and back["served"]["labels"] == {"stable": 1}
        assert "Traceback" not in cli("status").stderr
        # a bare verify checks what stable serves (v1, golden from the store), not the last export (v3)
        checked = cli("verify")
        assert "verifying stable: 'digits' version 1" in checked.stdout and "ok: served predictions" in checked.stdout
        assert json.loads(cli("verify", "--json").stdout)["version"] == 1
    finally:
        stopped = json.loads(cli("serve", "stop", "--json", check=False, without_tf=True).stdout or "{}")
    assert stopped.get("running") is False
    down = cli("status", "--json", check=False, without_tf=True)
    assert down.returncode == 10 and json.loads(down.stdout)["health"] == "not running"
