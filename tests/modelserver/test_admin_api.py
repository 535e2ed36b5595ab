"""A safe admin API (issue 11, item 3), against real servers with the official stubs:
empty and invalid reloads change nothing, reloaded base paths stay under the allowed
roots (also through `..` and symlinks), ModelService needs the bearer token while
Predict and REST status stay open, and the project's client sends its admin_token."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.client.client import PredictionClient
from serving.client.errors import ClientError
from serving.modelserver import admin

from .conftest import REPO
from .models import INPUT, OUTPUT, SHAPE, reference_predict, write_model

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _config(*entries: tuple[str, str]) -> model_server_config_pb2.ModelServerConfig:
    cfg = model_server_config_pb2.ModelServerConfig()
    for name, path in entries:
        cfg.model_config_list.config.add(name=name, base_path=path, model_platform="tensorflow")
    return cfg


def _reload(server, cfg, metadata=GOOD):
    req = model_management_pb2.ReloadConfigRequest()
    if cfg is not None:
        req.config.CopyFrom(cfg)
    return server.models.HandleReloadConfigRequest(req, timeout=120, metadata=metadata)


def _status(server, name: str, metadata=GOOD) -> dict[int, int]:
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    resp = server.models.GetModelStatus(req, timeout=10, metadata=metadata)
    return {s.version: s.state for s in resp.model_version_status}


def _predict_ok(server, name: str, version_dir: Path) -> None:
    x = np.random.default_rng(3).random((2, *SHAPE), dtype=np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(x))
    got = tf.make_ndarray(server.predict.Predict(req, timeout=30).outputs[OUTPUT])  # no token
    np.testing.assert_allclose(got, reference_predict(version_dir, x), atol=1e-6)


@pytest.fixture(scope="module")
def admin_setup(tmp_path_factory):
    """<root>/models/{demo,extra}, <root>/outside/evil, a symlink models/link → outside."""
    root = tmp_path_factory.mktemp("admin")
    models, outside = root / "models", root / "outside"
    write_model(models, "demo", 1)
    write_model(models, "extra", 1, seed=9)
    write_model(outside, "evil", 1)
    os.symlink(outside / "evil", models / "link")
    token_file = root / "token"
    token_file.write_text(f"  {TOKEN}\n")
    return root, token_file


@pytest.fixture
def guarded(admin_setup, server_factory):
    root, token_file = admin_setup
    server = server_factory(["--model_name=demo", f"--model_base_path={root / 'models' / 'demo'}",
                             f"--admin_token_file={token_file}"])
    _wait(server, "demo")
    return server, root


def _wait(server, name: str) -> None:
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            if 30 in _status(server, name).values():
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise AssertionError(server.log())


def test_token_guards_model_service_only(guarded):
    server, root = guarded
    for metadata, message in ((None, "authorization: Bearer"),
                              ((("authorization", "Bearer wrong"),), "Invalid admin token"),
                              ((("authorization", TOKEN),), "Invalid admin token")):
        for call in (lambda m=metadata: _status(server, "demo", m),
                     lambda m=metadata: _reload(server, _config(("demo", str(root / "models" / "demo"))), m)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in err.value.details() and "\n" not in err.value.details()
    assert _status(server, "demo") == {1: 30}
    _predict_ok(server, "demo", root / "models" / "demo" / "1")
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    conn.request("GET", "/v1/models/demo")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_empty_and_invalid_reloads_change_nothing(guarded):
    server, root = guarded
    demo = str(root / "models" / "demo")
    with pytest.raises(grpc.RpcError) as err:
        _reload(server, None)  # a 0-byte request: no config at all
    assert err.value.code() == INVALID and err.value.details() == admin.UNSUPPORTED_CONFIG
    empty_list = model_server_config_pb2.ModelServerConfig()
    empty_list.model_config_list.SetInParent()
    bad = [
        (empty_list, "no models"),
        (_config(("demo", demo), ("demo", demo)), "Illegal to list model demo multiple times"),
        (_config(("demo", demo), ("x", "relative/path")), "absolute path or URI"),
        (_config(("demo", demo), ("x", "")), "empty base_path"),
    ]
    for cfg, text in bad:
        with pytest.raises(grpc.RpcError) as err:
            _reload(server, cfg)
        assert err.value.code() == INVALID and text in err.value.details(), err.value.details()
    assert _status(server, "demo") == {1: 30}
    _predict_ok(server, "demo", root / "models" / "demo" / "1")
    assert "Loading servable: {name: x" not in server.log()


def test_reload_outside_the_roots_is_refused_inside_works(guarded):
    server, root = guarded
    demo = str(root / "models" / "demo")
    for path in ("/etc", str(root / "outside" / "evil"), str(root / "models" / ".." / "outside" / "evil"),
                 str(root / "models" / "link"), f"file://{root / 'models' / 'link'}"):
        with pytest.raises(grpc.RpcError) as err:
            _reload(server, _config(("demo", demo), ("evil", path)))
        assert err.value.code() == INVALID and "--model_base_path_prefix" in err.value.details(), path
        assert "outside the allowed roots" in err.value.details()
    with pytest.raises(grpc.RpcError):
        _status(server, "evil")  # never configured
    assert "Loading servable: {name: evil" not in server.log()
    _reload(server, _config(("demo", demo), ("extra", str(root / "models" / "extra"))))
    assert _status(server, "extra") == {1: 30} and _status(server, "demo") == {1: 30}
    _predict_ok(server, "extra", root / "models" / "extra" / "1")


def test_explicit_roots_and_no_roots(admin_setup, server_factory):
    root, _ = admin_setup
    outside = root / "outside"
    server = server_factory(["--model_name=demo", f"--model_base_path={root / 'models' / 'demo'}",
                             f"--model_base_path_prefix={outside}"], rest=False)
    _wait_open(server)
    with pytest.raises(grpc.RpcError) as err:  # the startup parent is no longer a root
        _reload(server, _config(("extra", str(root / "models" / "extra"))), None)
    assert err.value.code() == INVALID and str(outside) in err.value.details()
    _reload(server, _config(("evil", str(outside / "evil"))), None)
    assert _status(server, "evil", None) == {1: 30}

    closed = server_factory(["--model_name=demo", f"--model_base_path={root / 'models' / 'demo'}",
                             "--model_base_path_prefix="], rest=False)
    _wait_open(closed)
    with pytest.raises(grpc.RpcError) as err:
        _reload(closed, _config(("demo", str(root / "models" / "demo"))), None)
    assert err.value.code() == INVALID and "no allowed roots" in err.value.details()
    assert "--model_base_path_prefix" in err.value.details()


def _wait_open(server) -> None:
    server.wait_available("demo", 1)


def test_client_sends_its_admin_token(guarded):
    server, root = guarded
    with PredictionClient(f"127.0.0.1:{server.port}", admin_token=TOKEN, retries=1) as client:
        assert client.status("demo")[1]["state"] == "AVAILABLE"
        client.reload_config(_config(("demo", str(root / "models" / "demo"))).SerializeToString(),
                             deadline=60)
    with PredictionClient(f"127.0.0.1:{server.port}", retries=1) as client:
        with pytest.raises(ClientError) as err:
            client.status("demo")
        assert "UNAUTHENTICATED" in str(err.value) or err.value.code == "UNAUTHENTICATED"
        assert client.predict("demo", {INPUT: np.zeros((1, *SHAPE), np.float32)})  # Predict stays open


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_unreadable_or_empty_token_file_exits_with_one_line(tmp_path, content):
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1", "--port=0",
         "--model_base_path=/nonexistent", f"--admin_token_file={token}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "--admin_token_file" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert ("empty" in lines[0]) if content is not None else ("cannot read" in lines[0])


def test_roots_normalisation_units(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    guard = admin.ReloadGuard(admin.parse_roots(f"{tmp_path / 'root'},s3://bucket/models"))
    ok = [str(tmp_path / "root" / "m"), f"file://{tmp_path / 'root' / 'm'}", "s3://bucket/models/m",
          "s3://bucket/models/a/../m"]
    refused = [str(tmp_path / "root" / ".." / "m"), str(tmp_path / "root" / "link"),
               str(tmp_path / "rootx"), "s3://bucket/modelsx/m", "s3://bucket/models/../secret",
               "s3://other/models/m", "gs://bucket/models/m"]
    for path in ok:
        guard.check(_config(("m", path)))
    for path in refused:
        with pytest.raises(Exception) as err:
            guard.check(_config(("m", path)))
        assert "outside the allowed roots" in str(err.value), path
    assert admin.default_roots(["/a/b/demo", "s3://bkt/models/demo", "s3://bkt", "rel"]) == \
        ["/a/b", "s3://bkt/models"]
    with pytest.raises(SystemExit, match="neither an absolute path"):
        admin.parse_roots("/ok,relative/dir")
