"""No secret in any error line or JSON report: every command's error path with credentials
planted in every URL-shaped key (and in the AWS environment), in-process through the CLI.

The masking itself is `pipeline.redaction` (one function for error lines, `--json`, run
records and progress notes); this sweep is what keeps a new command or message from
printing a credential verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.redaction import redact_text, redacted
from tests.storage.conftest import write_version

S3_SECRET, ENDPOINT_PW, DOCKER_PW, SSH_PW, ENV_SECRET = (
    "PlantedS3Secret9", "PlantedEndpointPw8", "PlantedDockerPw7", "PlantedSshPw6", "PlantedEnvSecretValue5")
PLANTED = (S3_SECRET, ENDPOINT_PW, DOCKER_PW, SSH_PW, ENV_SECRET)
STORE = ["--set", f"storage.uri=s3://AKIAPLANTEDKEY:{S3_SECRET}@bucket/models",
         "--set", f"storage.endpoint_url=http://user:{ENDPOINT_PW}@127.0.0.1:9",
         "--set", "storage.max_attempts=1", "--set", "storage.connect_timeout_s=0.5"]
# a valid bucket: the request reaches the endpoint, whose URL (with its password) is in the failure
ENDPOINT = ["--set", "storage.uri=s3://bucket/models", *STORE[2:]]
DOCKER = ["--set", "rollout.target=docker", "--set", f"rollout.docker_host=tcp://user:{DOCKER_PW}@127.0.0.1:9"]
SSH = ["--set", "rollout.target=docker", "--set", f"rollout.docker_host=ssh://user:{SSH_PW}@127.0.0.1:9"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTEDENV")
    return tmp_path


def commands(vdir: Path) -> list[list[str]]:
    return [
        ["config", "check", *STORE, *DOCKER],
        ["storage", "ls", *STORE],
        ["storage", "pull", "digits", "1", *STORE],
        ["storage", "gc", "--keep", "1", *STORE],
        ["push", "--dir", str(vdir), *STORE],
        ["storage", "ls", *ENDPOINT], ["storage", "pull", "digits", "1", *ENDPOINT],
        ["push", "--dir", str(vdir), *ENDPOINT], ["rollout", "--version", "1", *ENDPOINT, *DOCKER],
        ["status", *DOCKER], ["status", *SSH],
        ["rollback", *DOCKER], ["rollout", "--version", "1", *STORE, *DOCKER],
        ["serve", "stop", *DOCKER], ["serve", "purge", "--yes", *SSH],
        ["deploy", "--from", "push", *STORE],
        ["verify", *DOCKER],
    ]


def test_no_planted_secret_in_any_output_or_file(workdir: Path):
    vdir = write_version(workdir / "exports")
    runner = CliRunner()
    failed = 0
    for args in commands(vdir):
        for extra in ([], ["--json"]):
            result = runner.invoke(app, [*args, *extra])
            output = result.stdout + result.stderr
            leaked = [s for s in PLANTED if s in output]
            assert not leaked, f"`tfrollout {' '.join(args)} {' '.join(extra)}` printed {leaked}: {output[-600:]}"
            failed += result.exit_code != 0
            if result.exit_code not in (0, None):
                assert "error:" in result.stderr, (args, result.stderr[-300:])
    assert failed >= 2 * (len(commands(vdir)) - 1)  # every command but `config check` took its error path
    for path in workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000 and vdir not in path.parents:
            text = path.read_bytes().decode(errors="replace")
            assert not [s for s in PLANTED if s in text], f"{path} keeps a planted secret"


@pytest.mark.parametrize("text, expected", [
    ("s3://KEY:SECRET1@bucket/m", "s3://KEY:***@bucket/m"),
    ("engine at ssh://deploy@host:22 unreachable", "engine at ssh://deploy@host:22 unreachable"),  # no password
    ("tcp://u:p%40ss@127.0.0.1:2376/x and http://a:b@c", "tcp://u:***@127.0.0.1:2376/x and http://a:***@c"),
    ("https://h/x?X-Amz-Signature=abc123&X-Amz-Credential=AKIA/1", "https://h/x?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("http://host:8080/path@x", "http://host:8080/path@x"),  # a port is not a password
])
def test_redact_text(text: str, expected: str):
    assert redact_text(text) == expected


def test_redacted_structures_and_environment_secrets(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-value-123456")
    data = {"uri": "s3://k:s@b", "nested": [{"note": "token-value-123456 used"}], "n": 3}
    assert redacted(data) == {"uri": "s3://k:***@b", "nested": [{"note": "*** used"}], "n": 3}
