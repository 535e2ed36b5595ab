"""`tfrollout deploy` as CI runs it, for the e2e tests of each target: the CLI in a
subprocess, a quick transfer (few epochs, no baseline, no accuracy floor) and an S3 store
served by a moto process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import TFROLLOUT

REPO_CONFIG = Path(__file__).resolve().parents[2] / "deploy.toml"


def quick_transfer_env(source_model: Path, **settings: str) -> dict[str, str]:
    """This process's environment plus a quick transfer of `source_model` (3 head epochs, 1 fine-tune
    epoch, no baseline) and `settings` as TFROLLOUT_<SECTION>__<KEY> variables."""
    return {**os.environ, "TFROLLOUT_MODEL__PATH": str(source_model),
            "TFROLLOUT_TRANSFER__HEAD_EPOCHS": "3", "TFROLLOUT_TRANSFER__FINE_TUNE_EPOCHS": "1",
            "TFROLLOUT_TRANSFER__BASELINE": "false", **settings}


def quick_deploy_env(source_model: Path, aws_env: dict[str, str], store_endpoint: str, bucket: str,
                     **settings: str) -> dict[str, str]:
    """The process environment: quick transfer, s3://<bucket>/models at `store_endpoint`,
    plus `settings` as TFROLLOUT_<SECTION>__<KEY> variables."""
    return quick_transfer_env(source_model, **aws_env, TFROLLOUT_GATE__MIN_ACCURACY="0",
                              TFROLLOUT_STORAGE__URI=f"s3://{bucket}/models",
                              TFROLLOUT_STORAGE__ENDPOINT_URL=store_endpoint,
                              TFROLLOUT_STORAGE__CREATE_BUCKET="true", **settings)


def json_cli(cwd: Path, env: dict[str, str], *extra: str) -> Callable[..., dict]:
    """cli(*args) runs `tfrollout *args *extra --json`, asserts exit 0 and returns the JSON."""
    def cli(*args: str) -> dict:
        proc = subprocess.run([TFROLLOUT, *args, *extra, "--json"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    return cli
