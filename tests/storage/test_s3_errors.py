"""S3 failure modes: each is one line, non-zero, and never contains a credential."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import StorageError
from pipeline.storage import open_store
from pipeline.storage.publish import push_version
from tests.storage.conftest import DUMMY_SECRET, MotoServer, s3_config, start_moto, write_version
from tests.support.procs import free_port

AUTH_BUCKET = "auth-bucket"
NO_AUTH_ACTIONS = 6  # requests moto serves before it starts checking signatures and IAM policies


@pytest.fixture(scope="module")
def auth_moto() -> Iterator[tuple[MotoServer, dict[str, tuple[str, str]]]]:
    """A moto server that enforces IAM: one user allowed s3:*, one with no permissions at all."""
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_ACTIONS)})
    try:
        import boto3

        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1")
        users = {}
        for name in ("writer", "nobody"):  # 2 x (create_user + create_access_key) = 4 actions
            iam.create_user(UserName=name)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            users[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        iam.put_user_policy(UserName="writer", PolicyName="s3", PolicyDocument=json.dumps({  # 5
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        server.client(*users["writer"]).create_bucket(Bucket=AUTH_BUCKET)  # 6, then auth is enforced
        yield server, users
    finally:
        server.stop()


def _push_error(cfg, tmp_path: Path) -> str:  # noqa: ANN001
    with pytest.raises(StorageError) as err:
        push_version(open_store(cfg), write_version(tmp_path / "exports"), "digits", 1)
    return str(err.value)


def _use_keys(monkeypatch: pytest.MonkeyPatch, key: str, secret: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


def test_auth_server_accepts_good_credentials(auth_moto, tmp_path: Path,  # noqa: ANN001
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server, users = auth_moto
    _use_keys(monkeypatch, *users["writer"])
    result = push_version(open_store(s3_config(server, AUTH_BUCKET)), write_version(tmp_path / "e"), "digits", 1)
    assert result.bytes_uploaded == result.total_bytes  # so the failures below are about the keys


def test_bad_credentials(auth_moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    server, users = auth_moto
    secret = "Wrong/Secret+Value0123456789abcdefghijkl"
    _use_keys(monkeypatch, users["writer"][0], secret)
    message = _push_error(s3_config(server, AUTH_BUCKET), tmp_path)
    assert "rejected the credentials (SignatureDoesNotMatch)" in message
    assert secret not in message and users["writer"][0] not in message and "\n" not in message
    _use_keys(monkeypatch, "AKIAUNKNOWNKEY000000", secret)
    message = _push_error(s3_config(server, AUTH_BUCKET), tmp_path)
    assert "rejected the credentials (InvalidAccessKeyId)" in message and "AKIAUNKNOWNKEY000000" not in message


def test_access_denied(auth_moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    server, users = auth_moto
    key, secret = users["nobody"]
    _use_keys(monkeypatch, key, secret)
    message = _push_error(s3_config(server, AUTH_BUCKET), tmp_path)
    assert f"access denied to bucket '{AUTH_BUCKET}'" in message
    assert secret not in message and key not in message and "\n" not in message


def test_unreachable_endpoint_gives_up_after_bounded_retries(tmp_path: Path) -> None:
    dead = MotoServer(free_port(), {})  # nothing listens on this port
    cfg = s3_config(dead, "some-bucket", max_attempts=3)
    t0 = time.monotonic()
    message = _push_error(cfg, tmp_path)
    elapsed = time.monotonic() - t0
    assert f"cannot reach S3 endpoint http://127.0.0.1:{dead.port}" in message
    assert "gave up after 3 attempts" in message and "\n" not in message
    assert elapsed < 15


def test_cli_prints_one_line_and_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dead_port = free_port()
    vdir = write_version(tmp_path / "exports")
    result = CliRunner().invoke(app, [
        "push", "--dir", str(vdir), "--uri", "s3://b-ucket/m",
        "--set", f"storage.endpoint_url=http://user:{DUMMY_SECRET}@127.0.0.1:{dead_port}",
        "--set", "storage.max_attempts=1", "--set", "storage.addressing_style=path"])
    assert result.exit_code == 6
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach S3 endpoint"), result.stderr
    assert DUMMY_SECRET not in result.stderr + result.stdout
