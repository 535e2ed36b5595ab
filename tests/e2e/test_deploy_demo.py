"""`tfrollout deploy` end to end on the offline demo, as `make deploy` runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def test_demo_deploy_twice_gives_versions_1_and_2(tmp_path: Path):
    env = {**os.environ, "TFROLLOUT_TRANSFER__HEAD_EPOCHS": "20", "TFROLLOUT_TRANSFER__FINE_TUNE_EPOCHS": "5",
           "TFROLLOUT_TRANSFER__BASELINE_EPOCHS": "20"}
    repo_config = Path(__file__).resolve().parents[2] / "deploy.toml"
    subprocess.run([str(BIN / "tfrollout"), "demo", "source-model", "--epochs", "5"], cwd=tmp_path,
                   env=env, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "demo" / "source_model.keras").is_file()

    reports = []
    for _ in range(2):
        proc = subprocess.run([str(BIN / "tfrollout"), "deploy", "--config", str(repo_config), "--json",
                               "--until", "push"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports.append(json.loads(proc.stdout))

    first, second = reports
    assert first["ok"] and first["ran"] == ["load", "transfer", "gate", "export", "push"]
    gate = first["stages"]["gate"]["outputs"]
    assert gate["passed"] and gate["serving_note"].startswith("nothing is served yet")
    assert first["stages"]["export"]["outputs"]["version"] == 1
    assert second["stages"]["export"]["outputs"]["version"] == 2
    assert first["run_id"] != second["run_id"]
    for version in ("1", "2"):
        vdir = tmp_path / "exports" / "digits" / version
        assert (vdir / "saved_model.pb").is_file()
        assert (vdir / "variables" / "variables.index").is_file()
        assert (vdir / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
        assert json.loads((vdir / "tfrollout.json").read_text())["version"] == int(version)
        # pushed to the default file:// store, committed (manifest written last)
        assert (tmp_path / "store" / "digits" / version / "saved_model.pb").is_file()
        assert (tmp_path / "store" / "digits" / version / "tfrollout.manifest.json").is_file()

    report = json.loads(Path(first["stages"]["transfer"]["outputs"]["report"]).read_text())
    assert report["labelled_examples"] == 10 and report["baseline"]["test_accuracy"] is not None
    assert report["transfer"]["test_accuracy"] > 0.3  # 1 label per class: well above 10-class chance (0.1)
    record = json.loads((tmp_path / ".tfrollout" / "run.json").read_text())
    assert record["run_id"] == second["run_id"]


def test_failed_stage_resumes_without_redoing_earlier_ones(tmp_path: Path, demo_source_model: Path):
    env = {**os.environ, "TFROLLOUT_MODEL__PATH": str(demo_source_model),
           "TFROLLOUT_TRANSFER__HEAD_EPOCHS": "3", "TFROLLOUT_TRANSFER__FINE_TUNE_EPOCHS": "1",
           "TFROLLOUT_TRANSFER__BASELINE": "false"}
    (tmp_path / "exports" / "digits" / "5").mkdir(parents=True)
    cmd = [str(BIN / "tfrollout"), "deploy", "--json", "--until", "push", "--set", "export.version=5"]
    failed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 5, failed.stderr[-2000:]
    assert json.loads(failed.stdout)["stages"]["export"]["status"] == "failed"
    (tmp_path / "exports" / "digits" / "5").rmdir()
    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads(resumed.stdout)
    assert report["resumed_from"] == "export" and report["ran"] == ["export", "push"]
    assert (tmp_path / "exports" / "digits" / "5" / "saved_model.pb").is_file()
