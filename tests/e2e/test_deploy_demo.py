"""`tfrollout deploy` end to end on the offline demo: resuming a failed run.

Two whole deploys of the demo (versions 1 and 2, canary -> promote) are checked by
`test_quickstart.py`, which runs the README quick start on a fresh clone."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deploy_cli import quick_transfer_env

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def test_failed_stage_resumes_without_redoing_earlier_ones(tmp_path: Path, demo_source_model: Path):
    env = quick_transfer_env(demo_source_model)
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
