"""Model lifecycle on a real server: new version dirs swap in with zero failed
requests, HandleReloadConfigRequest with labels, failing loads reported without
disturbing other versions, warmup replay, config-file polling."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2, predict_pb2

from serving import tfs_config
from tests.support.procs import wait_for

from .models import SHAPE, predict_request, reference_predict, write_broken, write_model

AVAILABLE, END = 30, 50


def _predict(server, name="m", version=None, label=None, x=None):
    x = np.ones((1, *SHAPE), np.float32) if x is None else x
    return server.predict.Predict(predict_request(name, x, version=version, label=label), timeout=10)


def _reload(server, entries):
    req = model_management_pb2.ReloadConfigRequest(config=tfs_config.build_model_server_config(entries))
    return server.models.HandleReloadConfigRequest(req, timeout=120)


def _status(server, name):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    return {s.version: s for s in server.models.GetModelStatus(req, timeout=10).model_version_status}


def test_new_version_swaps_in_with_zero_errors(tmp_path, server_factory):
    write_model(tmp_path, "m", 1)
    server = server_factory(["--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                             "--file_system_poll_wait_seconds=1"], rest=False)
    server.wait_available("m", 1)
    seen, errors, stop = set(), [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                seen.add(_predict(server).model_spec.version.value)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        write_model(tmp_path, "m", 2)
        assert wait_for(lambda: server.states("m").get(1) == END and server.states("m").get(2) == AVAILABLE,
                        60, 0.2), server.log()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert seen == {1, 2}
    x = np.random.default_rng(0).random((4, *SHAPE), dtype=np.float32)
    got = tf.make_ndarray(_predict(server, x=x).outputs["probabilities"])
    assert np.max(np.abs(got - reference_predict(tmp_path / "m" / "2", x))) <= 1e-6
    with pytest.raises(grpc.RpcError) as e:
        _predict(server, version=1)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_reload_config_with_labels(tmp_path, server_factory):
    write_model(tmp_path, "m", 1)
    write_model(tmp_path, "m", 2)
    base = str(tmp_path / "m")
    cfg = tmp_path / "models.config"
    tfs_config.write_text(tfs_config.build_model_server_config([tfs_config.ModelEntry("m", base)]), cfg)
    server = server_factory([f"--model_config_file={cfg}"], rest=False)
    server.wait_available("m", 2)
    assert set(_status(server, "m")) == {2}  # latest policy

    resp = _reload(server, [tfs_config.ModelEntry("m", base, versions=(1, 2),
                                                   labels={"stable": 1, "canary": 2})])
    assert resp.status.error_code == 0
    assert {v: s.state for v, s in _status(server, "m").items()} == {1: AVAILABLE, 2: AVAILABLE}
    assert _predict(server, label="canary").model_spec.version.value == 2
    assert _predict(server, label="stable").model_spec.version.value == 1

    _reload(server, [tfs_config.ModelEntry("m", base, versions=(2,), labels={"stable": 2})])
    assert _status(server, "m")[1].state == END
    assert _predict(server, label="stable").model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as e:
        _predict(server, label="canary")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Unrecognized servable version label: canary"

    # a label may not name a version that is not available (flag off)
    with pytest.raises(grpc.RpcError) as e:
        _reload(server, [tfs_config.ModelEntry("m", base, versions=(2,), labels={"stable": 7})])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _predict(server, label="stable").model_spec.version.value == 2  # old labels kept


def test_failing_versions_reported_without_disturbing_others(tmp_path, server_factory):
    write_model(tmp_path, "demo", 1)
    write_model(tmp_path, "bad", 1)
    write_broken(tmp_path, "bad", 2)
    bad_warmup = predict_pb2.PredictRequest()
    bad_warmup.model_spec.name = "badwarm"
    bad_warmup.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, *SHAPE), np.float32)))
    write_model(tmp_path, "badwarm", 1, warmup_request_override=bad_warmup)
    cfg = tmp_path / "models.config"
    tfs_config.write_text(tfs_config.build_model_server_config(
        [tfs_config.ModelEntry("demo", str(tmp_path / "demo"))]), cfg)
    server = server_factory([f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1",
                             "--max_num_load_retries=0"], rest=False)
    server.wait_available("demo", 1)
    assert "Number of warmup records read: 1" in server.log()

    # config-file polling picks up the new model list
    tfs_config.write_text(tfs_config.build_model_server_config([
        tfs_config.ModelEntry("demo", str(tmp_path / "demo")),
        tfs_config.ModelEntry("bad", str(tmp_path / "bad")),
        tfs_config.ModelEntry("badwarm", str(tmp_path / "badwarm")),
    ]), cfg)
    assert wait_for(lambda: server.states("bad").get(2) == END and server.states("badwarm").get(1) == END,
                    60, 0.2), server.log()
    bad = _status(server, "bad")
    assert bad[2].status.error_code != 0 and bad[2].status.error_message
    warm = _status(server, "badwarm")[1]
    assert "Failed to warm up" in warm.status.error_message and "images" in warm.status.error_message
    assert _predict(server, "demo").model_spec.version.value == 1  # others undisturbed


def test_failed_new_version_keeps_old_one_serving(tmp_path, server_factory):
    write_model(tmp_path, "m", 1)
    server = server_factory(["--model_name=m", f"--model_base_path={tmp_path / 'm'}",
                             "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"], rest=False)
    server.wait_available("m", 1)
    write_broken(tmp_path, "m", 2)
    assert wait_for(lambda: server.states("m").get(2) == END, 60, 0.2), server.log()
    time.sleep(1.5)  # another poll: still no unload of v1
    assert server.states("m")[1] == AVAILABLE
    assert _predict(server).model_spec.version.value == 1


def test_reload_with_new_base_path_serves_the_new_files(tmp_path, server_factory):
    write_model(tmp_path / "a", "m", 1, seed=11)
    write_model(tmp_path / "b", "m", 1, seed=22)
    # b/ is outside the default root (a/, the startup path's parent): allow both explicitly
    server = server_factory(["--model_name=m", f"--model_base_path={tmp_path / 'a' / 'm'}",
                             f"--model_base_path_prefix={tmp_path / 'a'},{tmp_path / 'b'}"], rest=False)
    server.wait_available("m", 1)
    x = np.random.default_rng(2).random((2, *SHAPE), dtype=np.float32)
    _reload(server, [tfs_config.ModelEntry("m", str(tmp_path / "b" / "m"))])
    got = tf.make_ndarray(_predict(server, x=x).outputs["probabilities"])
    assert np.max(np.abs(got - reference_predict(tmp_path / "b" / "m" / "1", x))) <= 1e-6
    assert server.states("m") == {1: AVAILABLE}
