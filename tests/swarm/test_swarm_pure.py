"""The swarm target's pure parts: spec shape, convergence, the agent's SigV4 and protobuf codec."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from pipeline.errors import RolloutError
from pipeline.targets.swarm import spec
from serving import agent

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


# ----------------------------------------------------------------------------- sidecar fetch mode
def _sidecar(version: int = 2) -> dict:
    objs = spec.sidecar_objects(SETTINGS, version, token=b"t", stable_label="stable")
    return spec.sidecar_task_template(SETTINGS, version, objs, {o.name: f"id-{o.name}" for o in objs})


def test_fetch_mode_is_agent_for_our_image_and_sidecar_otherwise():
    assert spec.resolve_fetch("auto", "tfrollout/model-server:x", "tfrollout/") == "agent"
    assert spec.resolve_fetch("auto", "tensorflow/serving:2.18.0", "tfrollout/") == "sidecar"
    assert spec.resolve_fetch("sidecar", "tfrollout/model-server:x", "tfrollout/") == "sidecar"
    assert spec.resolve_fetch("agent", "tensorflow/serving:2.18.0", "tfrollout/") == "agent"


def test_sidecar_fetch_image_defaults_to_ours_else_must_be_set():
    from pipeline.config import RolloutConfig
    from pipeline.targets.swarm import SwarmTarget

    ours = SwarmTarget(RolloutConfig(target="swarm", image="tfrollout/model-server:x", swarm_fetch="sidecar"), object())
    fs = ours.fetch_settings("digits")
    assert fs.image == "tfrollout/model-server:x" and fs.mode == "global" and fs.role == spec.FETCH_ROLE
    assert spec.settings_service(fs) == "tfrollout-digits-fetch" and not fs.admin_token
    official = SwarmTarget(RolloutConfig(target="swarm", image="tensorflow/serving:2.18.0"), object())
    assert official.fetch_mode == "sidecar"
    with pytest.raises(RolloutError, match="rollout.fetch_image"):
        official.fetch_settings("digits")
    chosen = SwarmTarget(RolloutConfig(target="swarm", image="tensorflow/serving:2.18.0",
                                       fetch_image="python:3.12-slim"), object())
    assert chosen.fetch_settings("digits").image == "python:3.12-slim"


def test_sidecar_serving_spec_runs_only_bash_and_the_entrypoint_on_a_read_only_volume():
    c = _sidecar()["ContainerSpec"]
    assert c["Command"][:2] == ["bash", "-c"] and c["Command"][3] == spec.SIDECAR_PROGRAM
    assert f'exec {spec.ENTRYPOINT} "$@" --rest_api_port="$port"' in c["Command"][2]
    assert c["Healthcheck"]["Test"][:3] == ["CMD", "bash", "-c"]
    flat = " ".join([*c["Command"], *c["Args"], *c["Healthcheck"]["Test"]])
    assert "python" not in flat and spec.AGENT_PATH not in flat and "curl" not in flat
    assert c["Mounts"] == [{"Type": "volume", "Source": "tfr-digits-models", "Target": "/models", "ReadOnly": True,
                            "VolumeOptions": {"NoCopy": True, "Labels": {spec.MANAGED: "1", spec.SERVICE_LABEL: "tfr",
                                                                         spec.MODEL_LABEL: "digits"}}}]
    channel = next(a for a in c["Args"] if a.startswith("--grpc_channel_arguments="))
    assert "grpc.so_reuseport=1" in channel and "grpc.max_connection_age_ms=2000" in channel
    assert "--port=8600" in c["Args"] and f"--model_config_file={spec.MODEL_CONFIG_PATH}" in c["Args"]
    assert not any(a.startswith(("--rest_api_port", "--grpc_socket_path")) for a in c["Args"])
    assert "TFR_SERVING_HOST=127.0.0.1" in c["Env"] and "TINI_KILL_PROCESS_GROUP=1" in c["Env"]
    assert "CapabilityAdd" not in c and c["Init"] is True
    assert {r["File"]["Name"] for r in c["Configs"]} == {spec.MODEL_CONFIG_PATH}
    assert {r["File"]["Name"] for r in c["Secrets"]} == {spec.TOKEN_PATH}  # no store credentials in the replica


def test_fetch_service_spec_is_global_writes_the_volume_and_lists_new_and_serving_versions():
    import dataclasses

    fs = dataclasses.replace(SETTINGS, role=spec.FETCH_ROLE, mode="global", admin_token=False)
    objs = spec.fetch_objects(fs, [(3, "cd" * 32), (2, "ab" * 32)], STORE, agent_source=b"print()",
                              credentials=b"{}")
    template = spec.fetch_task_template(fs, 3, objs, {o.name: f"id-{o.name}" for o in objs})
    c = template["ContainerSpec"]
    assert c["Command"] == ["python3", spec.AGENT_PATH, "fetch", spec.FETCH_SPEC_PATH]
    assert c["Healthcheck"]["Test"] == ["CMD", "python3", spec.AGENT_PATH, "fetched", spec.FETCH_SPEC_PATH]
    assert c["Mounts"][0]["Source"] == "tfr-digits-models" and c["Mounts"][0]["ReadOnly"] is False
    assert c["Labels"][spec.VERSION_LABEL] == "3" and c["Labels"][spec.ROLE_LABEL] == "fetch"
    assert template["Networks"] == [{"Target": "host"}] and spec.service_mode(fs) == {"Global": {}}
    data = json.loads(next(o.data for o in objs if o.target == spec.FETCH_SPEC_PATH))
    assert data["versions"] == [{"version": 3, "manifest_sha256": "cd" * 32}, {"version": 2, "manifest_sha256": "ab" * 32}]
    assert data["credentials_file"] == spec.CREDENTIALS_PATH and data["models_dir"] == "/models"
    assert all(o.name.startswith("tfr-digits-fetch-") for o in objs)
    assert agent.version_dirs(data) == ["/models/digits/3", "/models/digits/2"]


def test_fetch_prunes_unlisted_versions_and_stale_staging_only(tmp_path):
    import os

    for name in ("1", "2", "3", ".4.partial-host-1", ".5.partial-host-2", "notes"):
        (tmp_path / name).mkdir()
    os.utime(tmp_path / ".4.partial-host-1", (0, 0))
    assert agent.prune(str(tmp_path), {2, 3}, now=10_000.0 + os.path.getmtime(tmp_path / "3")) == [
        ".4.partial-host-1", ".5.partial-host-2", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3", "notes"]
    assert agent.prune(str(tmp_path / "missing"), {1}, now=0.0) == []


def test_fetched_health_needs_every_listed_version(tmp_path):
    fspec = {"model": "digits", "models_dir": str(tmp_path), "versions": [{"version": 2}, {"version": 1}]}
    (tmp_path / "digits" / "2").mkdir(parents=True)
    assert agent.fetched(fspec) == 1
    (tmp_path / "digits" / "1").mkdir()
    assert agent.fetched(fspec) == 0


@pytest.mark.parametrize(("status", "body", "healthy"), [
    (200, {"model_version_status": [{"version": "2", "state": "AVAILABLE",
                                     "status": {"error_code": "OK", "error_message": ""}}]}, True),
    (200, {"model_version_status": [{"version": "2", "state": "LOADING",
                                     "status": {"error_code": "OK", "error_message": ""}}]}, False),
    (200, {"model_version_status": [{"version": "12", "state": "AVAILABLE", "status": {}}]}, False),
    (404, {"error": "Could not find any versions of model digits"}, False),
])
def test_sidecar_health_script_in_bash_against_a_rest_status(tmp_path, status, body, healthy):
    """The bash health check against a stand-in REST server (TF Serving's status JSON, pretty-printed
    as TF Serving does)."""
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            payload = json.dumps(body, indent=1).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port_file = tmp_path / "port"
        port_file.write_text(f"{server.server_address[1]}\n")
        script = spec.sidecar_health_script("digits", 2, port_file=str(port_file))
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert (done.returncode == 0) is healthy, done.stdout + done.stderr
    assert seen == ["/v1/models/digits/versions/2"]


def test_sidecar_start_script_picks_a_port_nobody_listens_on_and_execs_the_entrypoint(tmp_path):
    import socket
    import subprocess

    fake = tmp_path / "entrypoint.sh"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    port_file = tmp_path / "port"
    script = spec.sidecar_start_script(port_file=str(port_file), entrypoint=str(fake))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = subprocess.run(["bash", "-c", script, spec.SIDECAR_PROGRAM, "--port=8600", "--x=a b"],
                              capture_output=True, text=True, timeout=10, check=True)
    port = int(port_file.read_text())
    low, high = spec.REST_PORT_RANGE
    assert low <= port <= high
    assert done.stdout.splitlines() == ["--port=8600", "--x=a b", f"--rest_api_port={port}"]


def test_the_drain_says_whether_queued_connections_move_or_are_reset(tmp_path):
    from serving.agent import migrates_queued_connections

    setting = tmp_path / "tcp_migrate_req"
    setting.write_text("1\n")
    assert migrates_queued_connections(str(setting)) is True
    setting.write_text("0\n")
    assert migrates_queued_connections(str(setting)) is False
    assert migrates_queued_connections(str(tmp_path / "absent")) is None
