"""`tfrollout deploy` with `storage.uri = "s3://…"` and an endpoint: the demo pushed to a real S3 process."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.storage.conftest import MotoServer
from tests.support.cli import TFROLLOUT
from tests.support.deploy_cli import quick_transfer_env

pytestmark = pytest.mark.e2e


def test_deploy_pushes_demo_export_to_s3(tmp_path: Path, moto: MotoServer, demo_source_model: Path):
    bucket = "deploy-e2e"
    env = quick_transfer_env(demo_source_model)
    cmd = [TFROLLOUT, "deploy", "--json", "--until", "push",
           "--set", f"storage.uri=s3://{bucket}/models", "--set", f"storage.endpoint_url={moto.endpoint}",
           "--set", "storage.addressing_style=path", "--set", "storage.create_bucket=true"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    push = json.loads(proc.stdout)["stages"]["push"]["outputs"]
    assert push["uri"] == f"s3://{bucket}/models/digits/1/"
    keys = {o["Key"] for o in moto.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert "models/digits/1/saved_model.pb" in keys
    assert "models/digits/1/tfrollout.manifest.json" in keys
    local_files = {str(p.relative_to(tmp_path / "exports" / "digits" / "1"))
                   for p in (tmp_path / "exports" / "digits" / "1").rglob("*") if p.is_file()}
    assert {f"models/digits/1/{name}" for name in local_files} <= keys
    assert not (tmp_path / "store").exists()  # nothing went to the default file:// store
