"""The swarm target's pure parts: spec shape, convergence, the agent's SigV4 and protobuf codec."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from pipeline.errors import RolloutError
from pipeline.targets import swarm_agent as agent
from pipeline.targets import swarm_spec as spec

SETTINGS = spec.ServiceSettings(prefix="tfr", model="digits", image="tfrollout/model-server:x", grpc_port=8600,
                                replicas=3, monitor_s=4.0)
STORE = spec.StoreRef("bucket", "models", "http://127.0.0.1:9000", "us-east-1", "path")


def _objects(version: int = 2, token: bytes | None = b"t") -> list[spec.SwarmObject]:
    return spec.objects(SETTINGS, version, "ab" * 32, STORE, agent_source=b"print()", credentials=b"{}",
                        token=token, stable_label="stable")


def test_spec_pins_one_version_shares_the_port_and_rolls_start_first_with_rollback():
    objs = _objects()
    template = spec.task_template(SETTINGS, 2, objs, {o.name: f"id-{o.name}" for o in objs})
    c = template["ContainerSpec"]
    assert template["Networks"] == [{"Target": "host"}]
    channel = next(a for a in c["Args"] if a.startswith("--grpc_channel_arguments="))
    assert "grpc.so_reuseport=1" in channel and "grpc.max_connection_age_ms=2000" in channel
    assert "--rest_api_port=0" in c["Args"] and c["CapabilityAdd"] == ["CAP_SYS_PTRACE"]
    assert "--port=8600" in c["Args"] and f"--grpc_socket_path={spec.SOCKET_PATH}" in c["Args"]
    assert c["Healthcheck"]["Test"][:3] == ["CMD", "python", spec.AGENT_PATH]
    assert c["Labels"][spec.VERSION_LABEL] == "2"
    assert {r["File"]["Name"] for r in c["Configs"]} == {spec.AGENT_PATH, spec.REPLICA_SPEC_PATH,
                                                        spec.MODEL_CONFIG_PATH}
    assert {r["File"]["Name"] for r in c["Secrets"]} == {spec.CREDENTIALS_PATH, spec.TOKEN_PATH}
    assert all(r["File"]["Mode"] == 0o400 for r in c["Secrets"])
    update = spec.update_config(SETTINGS)
    assert update == {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": 4 * spec.SECOND_NS,
                      "MaxFailureRatio": 0.0, "Order": "start-first"}
    replica = json.loads(next(o.data for o in objs if o.target == spec.REPLICA_SPEC_PATH))
    assert replica["version"] == 2 and replica["manifest_sha256"] == "ab" * 32 and replica["port"] == 8600
    config = next(o.data for o in objs if o.target == spec.MODEL_CONFIG_PATH).decode()
    assert "versions: 2" in config and 'key: "stable"' in config and "/models/digits" in config


def test_objects_are_named_by_content_so_versions_never_overwrite_each_other():
    v2, v3 = _objects(2), _objects(3)
    assert [o.name for o in v2] == [o.name for o in _objects(2)]
    assert {o.name for o in v2} & {o.name for o in v3} == {o.name for o in v2 if o.target in
                                                            (spec.AGENT_PATH, spec.CREDENTIALS_PATH,
                                                             spec.TOKEN_PATH)}
    assert all(o.name.startswith("tfr-digits-") for o in v2)


def _task(version: int, state: str = "running", desired: str = "running") -> dict:
    return {"DesiredState": desired, "Status": {"State": state},
            "Spec": {"ContainerSpec": {"Labels": {spec.VERSION_LABEL: str(version)}}}}


def _service(version: int, update: str | None) -> dict:
    out: dict = {"Spec": {"Labels": {spec.VERSION_LABEL: str(version)}}}
    if update:
        out["UpdateStatus"] = {"State": update, "Message": "m"}
    return out


@pytest.mark.parametrize(("service", "tasks", "done", "ok"), [
    (_service(1, None), [_task(1), _task(1)], True, True),  # created, both healthy
    (_service(1, None), [_task(1), _task(1, "starting")], False, False),
    (_service(2, "updating"), [_task(1), _task(2)], False, False),
    (_service(2, "completed"), [_task(2), _task(2), _task(1, "shutdown", "shutdown")], True, True),
    (_service(2, "completed"), [_task(2), _task(1)], False, False),  # old replica still running
    (_service(1, "rollback_completed"), [_task(1), _task(1)], True, False),
    (_service(3, "paused"), [_task(2), _task(3)], True, False),
])
def test_convergence(service, tasks, done, ok):
    state = spec.converged(service, tasks, 2)
    assert (state.done, state.ok) == (done, ok), state.detail


def test_sigv4_matches_botocore():
    """Same request, same instant: our Authorization header equals botocore's."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = agent.object_url({"endpoint": "http://127.0.0.1:9000", "bucket": "b", "addressing": "path"},
                           "models/digits/2/variables/variables.data-00000-of-00001")
    creds = {"access_key": "AKIDEXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
             "session_token": "tok"}
    request = AWSRequest(method="GET", url=url, headers={"x-amz-content-sha256": agent.EMPTY_SHA})
    S3SigV4Auth(Credentials("AKIDEXAMPLE", creds["secret_key"], "tok"), "s3", "us-east-1").add_auth(request)
    when = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    ours = agent.sigv4_headers(url, "us-east-1", creds, when)
    assert ours["x-amz-security-token"] == request.headers["X-Amz-Security-Token"]
    assert request.headers["Authorization"] == ours["authorization"]
    other = agent.sigv4_headers(url + "x", "us-east-1", creds, when)
    assert other["authorization"] != ours["authorization"]


def test_status_codec_round_trips_through_the_real_protos():
    from tensorflow_serving.apis import get_model_status_pb2

    req = get_model_status_pb2.GetModelStatusRequest.FromString(agent.status_request("digits", 7))
    assert req.model_spec.name == "digits" and req.model_spec.version.value == 7
    resp = get_model_status_pb2.GetModelStatusResponse()
    ok = resp.model_version_status.add(version=7, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ok.status.error_code = 0
    bad = resp.model_version_status.add(version=9, state=get_model_status_pb2.ModelVersionStatus.END)
    bad.status.error_code = 3
    bad.status.error_message = "Failed to load"
    assert agent.parse_status(resp.SerializeToString()) == {7: (agent.AVAILABLE, ""),
                                                            9: (agent.END, "Failed to load")}


def test_manifest_checks_refuse_unsafe_paths_and_other_versions():
    good = {"format": agent.MANIFEST_FORMAT, "model_name": "digits", "version": 2,
            "files": [{"path": "saved_model.pb", "size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}]}
    assert agent.parse_manifest(json.dumps(good).encode(), "digits", 2)[0][0] == "saved_model.pb"
    with pytest.raises(agent.AgentError, match="describes digits version 2"):
        agent.parse_manifest(json.dumps(good).encode(), "digits", 3)
    for path in ("../x", "/etc/passwd", "a/../../b", ""):
        bad = {**good, "files": [{"path": path, "size": 1, "sha256": "0"}]}
        with pytest.raises(agent.AgentError):
            agent.parse_manifest(json.dumps(bad).encode(), "digits", 2)


def test_health_needs_a_fresh_available_look():
    now = 1000.0
    assert agent.health_verdict({"state": agent.AVAILABLE, "at": now - 1}, now) == (True, "AVAILABLE")
    assert not agent.health_verdict({"state": agent.AVAILABLE, "at": now - 6}, now)[0]  # agent stuck
    assert not agent.health_verdict({"state": 20, "at": now}, now)[0]  # LOADING
    assert not agent.health_verdict({"state": agent.END, "message": "boom", "at": now}, now)[0]
    assert not agent.health_verdict(None, now)[0]


def test_health_command_reads_the_agents_status_file(tmp_path, capsys):
    spec_ = {"model": "digits", "version": 2, "health_file": str(tmp_path / "h.json")}
    assert agent.health(spec_) == 1
    agent.write_health(spec_["health_file"], agent.AVAILABLE, "", __import__("time").time())
    assert agent.health(spec_) == 0
    assert "healthy: digits version 2" in capsys.readouterr().out


def test_global_mode_runs_one_replica_per_node():
    import dataclasses

    assert spec.service_mode(SETTINGS) == {"Replicated": {"Replicas": 3}}
    assert spec.service_mode(dataclasses.replace(SETTINGS, mode="global")) == {"Global": {}}
    canary = dataclasses.replace(SETTINGS, role="canary")
    assert spec.settings_service(canary) == "tfr-digits-canary" and spec.labels(canary)[spec.ROLE_LABEL] == "canary"


def test_serve_stop_on_an_engine_outside_any_swarm_is_a_no_op():
    from types import SimpleNamespace

    import docker

    from pipeline.config import RolloutConfig
    from pipeline.targets.swarm import SwarmTarget

    def not_a_manager(**_kw):
        raise docker.errors.APIError("503", response=SimpleNamespace(status_code=503, reason="x", url="u"))

    client = SimpleNamespace(services=SimpleNamespace(list=not_a_manager),
                             info=lambda: {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}})
    target = SwarmTarget(RolloutConfig(target="swarm"), client)
    assert not target.running()
    assert target.describe()["services"] == {}
    assert target.purge() == []
    with pytest.raises(RolloutError, match="not a swarm manager"):
        target.require_manager()
