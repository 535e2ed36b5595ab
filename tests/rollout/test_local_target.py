"""The rollout machine against a real local model-server process and a file:// store."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DeployConfig
from pipeline.errors import RolloutError, StorageError
from pipeline.rollout.machine import RolloutFailed
from pipeline.rollout.plan import Served
from pipeline.rollout.session import committed_versions, open_session
from tests.rollout.hammer import BackgroundLoad
from tests.rollout.models import MODEL, Versions
from tests.support.golden_inputs import inputs

RESULTS: dict[str, object] = {}


def session_for(cfg: DeployConfig, versions: Versions, golden_version: int):
    store, _ = committed_versions(cfg, MODEL)
    return open_session(cfg, MODEL, store=store, golden=versions.golden[golden_version])


def rollout(cfg: DeployConfig, versions: Versions, version: int, golden: int | None = None):
    session = session_for(cfg, versions, golden or version)
    try:
        return session.machine.rollout(MODEL, version)
    finally:
        session.close()


def test_first_deploy_then_update_under_load_has_zero_failed_requests(local_cfg, versions):
    first = rollout(local_cfg, versions, 1)
    assert first.ok and first.action == "first-deploy"
    endpoint = f"127.0.0.1:{local_cfg.rollout.grpc_port}"
    served = json.loads(json.dumps(first.served))
    assert served == {"model": MODEL, "versions": [1], "labels": {"stable": 1}}

    with BackgroundLoad(endpoint, MODEL, "stable", inputs(versions), concurrency=20) as load:
        threading.Event().wait(0.5)  # load is flowing before the rollout starts
        second = rollout(local_cfg, versions, 2)
        threading.Event().wait(0.5)
    assert second.ok and second.action == "update" and second.previous == 1
    assert load.errors == {}, (load.errors, load.first_error)
    assert load.ok >= 100 and load.versions[1] > 0 and load.versions[2] > 0
    RESULTS["zero_downtime"] = {"requests": load.requests, "failed": sum(load.errors.values()),
                                "by_version": dict(load.versions), "timings_s": second.timings_s}
    print(f"\nzero-downtime local: {RESULTS['zero_downtime']}")
    # persisted: a restarted runtime serves the same set; v1's files stay for rollback
    target = session_for(local_cfg, versions, 2).target
    from pipeline.rollout.host import served_from_config

    assert served_from_config(target.read_config(), MODEL) == Served(MODEL, (2,), {"stable": 2})
    assert target.versions(MODEL) == [1, 2]


def test_a_failure_after_promote_leaves_stable_on_the_new_version_and_status_finishes_it(local_cfg, versions):
    from pipeline.commands.runtime import finish_owed_clean_up
    from pipeline.rollout.host import served_from_config
    from serving.client import PredictionClient
    from tests.rollout.faults import writes_fail_after_promote

    assert rollout(local_cfg, versions, 1).ok
    session = session_for(local_cfg, versions, 2)
    failed = writes_fail_after_promote(session)
    try:
        report = session.machine.rollout(MODEL, 2)
    finally:
        session.close()
    assert report.ok and report.promoted and not report.rolled_back and len(failed) == 3
    assert report.cleanup_pending.startswith("persist-config failed after 3 attempts")
    endpoint = f"127.0.0.1:{local_cfg.rollout.grpc_port}"
    with PredictionClient(endpoint, deadline=15) as client:  # the runtime serves the verified v2 as stable
        assert client.predict_detailed(MODEL, inputs(versions), label="stable").version == 2
    target = session_for(local_cfg, versions, 2).target
    assert served_from_config(target.read_config(), MODEL).labels["stable"] == 1  # the file lags behind
    assert finish_owed_clean_up(local_cfg, MODEL).startswith("finished")  # what `tfrollout status` runs first
    assert served_from_config(target.read_config(), MODEL) == Served(MODEL, (2,), {"stable": 2})
    assert finish_owed_clean_up(local_cfg, MODEL) is None


@pytest.mark.parametrize(("bad", "fragment"), [(3, "differs"), (4, "expects dt_float [-1,9,9,1]")])
def test_bad_model_fails_at_canary_and_rolls_back_without_errors_on_stable(local_cfg, versions, bad, fragment):
    rollout(local_cfg, versions, 2)
    endpoint = f"127.0.0.1:{local_cfg.rollout.grpc_port}"
    with BackgroundLoad(endpoint, MODEL, "stable", inputs(versions), concurrency=20) as load:
        threading.Event().wait(0.3)
        with pytest.raises(RolloutFailed) as err:
            rollout(local_cfg, versions, bad, golden=3 if bad == 3 else 4)
        threading.Event().wait(0.3)
    report = err.value.report
    assert report.rolled_back and report.verify and report.verify["ok"] is False
    assert "verification of label 'canary' failed" in str(err.value)
    assert fragment in str(err.value).lower() or fragment in (report.verify["reason"] or "").lower()
    assert "Successfully loaded servable version" in (report.logs or "")  # the runtime's own log
    assert load.errors == {} and load.ok > 0 and set(load.versions) == {2}
    RESULTS[f"bad_model_v{bad}"] = {"requests": load.requests, "failed": sum(load.errors.values())}
    print(f"\nbad model v{bad}: stable load {RESULTS[f'bad_model_v{bad}']}, reason: {report.verify['reason']}")
    session = session_for(local_cfg, versions, 2)
    assert session.host.read(MODEL) == Served(MODEL, (2,), {"stable": 2})
    assert set(session.host.states(MODEL, 5)) >= {2}
    session.close()


def test_server_crash_during_the_canary_check_is_restarted_and_still_verified(local_cfg, versions):
    rollout(local_cfg, versions, 1)
    session = session_for(local_cfg, versions, 2)
    pid = session.target.pid()
    checked: list[int | None] = []
    real_verifier = session.machine.verifier

    def crash_then_verify(version, label, timeout_s):  # the server dies (OOM, segfault) mid-check
        os.kill(pid, signal.SIGKILL)
        outcome = real_verifier(version, label, timeout_s)
        checked.append(session.target.pid())
        return outcome

    session.machine.verifier = crash_then_verify
    report = session.machine.rollout(MODEL, 2)
    session.close()
    assert report.ok and report.verify and report.verify["ok"] is True  # promoted only after a passing check
    assert checked and checked[0] not in (None, pid)  # the check ran against the restarted server
    supervision = session.target.describe()["supervisor"]
    assert supervision["restarts"] == 1 and supervision["last_exit"] == "killed by SIGKILL"
    assert supervision["state"] == "running" and supervision["server_pid"] == checked[0]


def test_runtime_gone_during_rollout_then_rollback_restores_service(local_cfg, versions):
    rollout(local_cfg, versions, 1)
    session = session_for(local_cfg, versions, 2)
    state = json.loads((session.target.dir / "server.json").read_text())
    supervisor, server = state["supervisor"]["pid"], session.target.pid()
    real_verifier = session.machine.verifier

    def kill_then_verify(version, label, timeout_s):  # supervisor and server both die
        os.kill(supervisor, signal.SIGKILL)
        os.kill(server, signal.SIGKILL)
        return real_verifier(version, label, timeout_s)

    session.machine.verifier = kill_then_verify
    with pytest.raises(RolloutFailed) as err:
        session.machine.rollout(MODEL, 2)
    session.close()
    message = str(err.value)
    assert "not running" in message and "tfrollout rollback" in message
    assert session.host.read(MODEL) == Served(MODEL, (1,), {"stable": 1})  # safe config persisted
    assert not session.target.running()

    session = session_for(local_cfg, versions, 1)
    report = session.machine.rollback(MODEL, [1, 2])
    assert report.action == "restore" and session.target.running()
    from serving.client import PredictionClient

    with PredictionClient(session.target.endpoint, deadline=10) as client:
        assert client.predict_detailed(MODEL, inputs(versions), label="stable").version == 1
    session.close()
    assert rollout(local_cfg, versions, 2).ok  # and a re-run completes the update


def test_second_rollout_is_refused_while_the_lock_is_held(local_cfg, versions):
    session = session_for(local_cfg, versions, 1)
    session.target.lock("someone else", 1800)
    try:
        other = session_for(local_cfg, versions, 1)
        with pytest.raises(RolloutError, match="another rollout is in progress"):
            other.machine.rollout(MODEL, 1)
        assert not other.target.running() and other.target.read_config() is None
    finally:
        session.target.unlock()


def test_unreachable_store_fails_before_touching_the_serving_host(tmp_path: Path, versions):
    from pipeline.config import build_config

    cfg = build_config({"storage": {"uri": "s3://bucket/p", "endpoint_url": "http://127.0.0.1:9",
                                    "max_attempts": 1, "connect_timeout_s": 0.5},
                        "rollout": {"local_dir": str(tmp_path / "serving")}})
    with pytest.raises(StorageError):
        committed_versions(cfg, MODEL)
    assert not (tmp_path / "serving").exists()


def test_the_local_runtime_closes_its_admin_api_by_default(local_cfg, versions, tmp_path):
    """Predict stays open; ModelService needs the runtime's token; reloads stay inside our roots."""
    import grpc
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
    )

    from pipeline.commands.runtime import status_report
    from serving import tfs_config
    from serving.client import PredictionClient

    assert rollout(local_cfg, versions, 1).ok
    target = session_for(local_cfg, versions, 1).target
    token = target.admin_token()
    assert token and len(token) >= 40 and (target.token_path.stat().st_mode & 0o777) == 0o600
    assert target.describe()["admin_api"] == "token"
    with grpc.insecure_channel(target.endpoint) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetModelStatus(request, timeout=10)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", f"Bearer {token}"),)
        assert stub.GetModelStatus(request, timeout=10, metadata=auth).model_version_status
        elsewhere = tmp_path / "elsewhere" / MODEL
        elsewhere.mkdir(parents=True)
        outside = tfs_config.build_model_server_config([tfs_config.ModelEntry(name=MODEL, base_path=str(elsewhere))])
        with pytest.raises(grpc.RpcError) as refused:
            stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=outside),
                                           timeout=10, metadata=auth)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with PredictionClient(target.endpoint, deadline=10) as client:  # no token: Predict is open
        assert client.predict_detailed(MODEL, inputs(versions), label="stable").version == 1
    info = status_report(local_cfg, MODEL)  # the CLI's status holds the token
    assert info["ok"] and info["states"] == {"1": "AVAILABLE"}


def test_a_good_version_replaces_a_nan_stable_under_the_demo_gate(tmp_path: Path):
    """Issue 27 item 9: with a NaN-answering stable and deploy.toml's gate (min_accuracy and
    max_drop_vs_serving), the good version's rollout used to fail ("the stable version could
    not be scored") and roll back to the NaN one. The broken stable is no bar: the canary's
    own accuracy decides, and it is promoted."""
    import tomllib

    from pipeline.config import GateConfig
    from serving.client import PredictionClient
    from tests.rollout.conftest import local_config
    from tests.rollout.models import build_nan_stable_and_fix

    repo_gate = tomllib.loads((Path(__file__).resolve().parents[2] / "deploy.toml").read_text())["gate"]
    assert repo_gate["max_drop_vs_serving"] is not None and repo_gate["min_accuracy"] > 0
    versions = build_nan_stable_and_fix(tmp_path / "models")
    cfg = local_config(tmp_path, versions.store_uri)
    cfg = cfg.model_copy(update={"gate": GateConfig(**repo_gate)})
    try:
        store, _ = committed_versions(cfg, MODEL)
        unchecked = open_session(cfg, MODEL, store=store)  # no golden set: promoted unverified
        try:
            assert unchecked.machine.rollout(MODEL, 1).promoted
        finally:
            unchecked.close()
        endpoint = f"127.0.0.1:{cfg.rollout.grpc_port}"
        with PredictionClient(endpoint, deadline=15) as client:
            served = client.predict_detailed(MODEL, inputs(versions), label="stable")
        assert served.version == 1 and np.isnan(served.outputs["probabilities"]).all()

        report = rollout(cfg, versions, 2)
        assert report.ok and report.promoted and not report.rolled_back, report.to_json()
        gate = report.to_json()["verify"]["gate"]
        assert gate["passed"] and gate["canary_accuracy"] == 1.0 and not gate["stable_accuracy"] >= 0
        with PredictionClient(endpoint, deadline=15) as client:
            served = client.predict_detailed(MODEL, inputs(versions), label="stable")
        assert served.version == 2 and np.isfinite(served.outputs["probabilities"]).all()
    finally:
        from pipeline.targets import open_target

        open_target(cfg.rollout, cfg.run.workdir).stop()
