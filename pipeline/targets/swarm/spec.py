"""The swarm service spec of one model (pure: dicts shaped as the Engine API wants them).

Everything a replica needs travels in the spec, so swarm can (re)start a replica on any
node without the pipeline: the model config and the replica's fetch spec are swarm
config objects, the store credentials and the admin token are swarm secrets, the
agent (one zip file, `serving.agent.bundle`) is a config object too. Objects are immutable
and named by content hash, so an update creates new ones and a rollback finds the previous
ones still there.

Here: the agent-mode replica spec and its task, and convergence (where a service stands).
The pieces both modes share are in `swarm_service` (networking notes there), the sidecar
fetch mode's builders in `swarm_fetch_spec`; both are re-exported, so `swarm_spec.X` reaches
every name of the three.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipeline.targets.swarm.fetch_spec import (
    FETCH_ROLE,
    FETCH_SPEC_PATH,
    REST_PORT_FILE,
    REST_PORT_RANGE,
    SIDECAR_PROGRAM,
    fetch_objects,
    fetch_spec,
    fetch_task_template,
    resolve_fetch,
    sidecar_health_script,
    sidecar_objects,
    sidecar_server_args,
    sidecar_start_script,
    sidecar_task_template,
    volume_mount,
    volume_name,
)
from pipeline.targets.swarm.service import (
    AGENT_PATH,
    CREDENTIALS_PATH,
    ENTRYPOINT,
    HEALTH_FILE,
    MANAGED,
    MODEL_CONFIG_PATH,
    MODEL_LABEL,
    REPLICA_SPEC_PATH,
    ROLE_LABEL,
    SECOND_NS,
    SERVICE_LABEL,
    SOCKET_PATH,
    TOKEN_PATH,
    VERSION_LABEL,
    ServiceSettings,
    StoreRef,
    SwarmObject,
    content_name,
    healthcheck,
    labels,
    model_config_text,
    rollback_config,
    server_args,
    service_mode,
    service_name,
    settings_service,
    task_spec,
    update_config,
)

__all__ = [
    "AGENT_PATH", "CREDENTIALS_PATH", "ENTRYPOINT", "FETCH_ROLE", "FETCH_SPEC_PATH", "HEALTH_FILE", "MANAGED",
    "MODEL_CONFIG_PATH", "MODEL_LABEL", "REPLICA_SPEC_PATH", "REST_PORT_FILE", "REST_PORT_RANGE", "ROLE_LABEL",
    "SECOND_NS", "SERVICE_LABEL", "SIDECAR_PROGRAM", "SOCKET_PATH", "TOKEN_PATH", "VERSION_LABEL", "Applied",
    "Convergence", "ServiceSettings", "StoreRef", "SwarmObject", "content_name", "converged", "fetch_objects",
    "fetch_spec", "fetch_task_template", "healthcheck", "labels", "model_config_text", "objects", "replica_spec",
    "resolve_fetch", "rollback_config", "server_args", "service_mode", "service_name", "settings_service",
    "sidecar_health_script", "sidecar_objects", "sidecar_server_args", "sidecar_start_script",
    "sidecar_task_template", "task_spec", "task_template", "task_version", "update_config", "volume_mount",
    "volume_name",
]


def replica_spec(s: ServiceSettings, model: str, version: int, manifest_sha256: str, store: StoreRef,
                 *, credentials: bool) -> dict[str, Any]:
    """What the agent reads: which bytes to fetch and prove, where to put them, how to ask for health."""
    return {"model": model, "version": int(version), "manifest_sha256": manifest_sha256,
            "store": store.to_json(), "models_dir": s.models_dir, "socket": SOCKET_PATH,
            "health_file": HEALTH_FILE,
            "exec": [ENTRYPOINT], "port": s.grpc_port, "drain_s": s.drain_s, "credentials_file": CREDENTIALS_PATH if credentials else None,
            "token_file": TOKEN_PATH if s.admin_token else None}



def objects(s: ServiceSettings, version: int, manifest_sha256: str, store: StoreRef, *,
            agent_source: bytes, credentials: bytes | None, token: bytes | None,
            stable_label: str) -> list[SwarmObject]:
    """Every config/secret one version's spec refers to."""
    base, model = settings_service(s), s.model
    spec = json.dumps(replica_spec(s, model, version, manifest_sha256, store, credentials=credentials is not None),
                      sort_keys=True).encode()
    config = model_config_text(model, version, s.models_dir, stable_label).encode()
    out = [SwarmObject("config", content_name(f"{base}-agent", agent_source), agent_source, AGENT_PATH),
           SwarmObject("config", content_name(f"{base}-v{version}-replica", spec), spec, REPLICA_SPEC_PATH),
           SwarmObject("config", content_name(f"{base}-v{version}-models", config), config, MODEL_CONFIG_PATH)]
    if credentials is not None:
        out.append(SwarmObject("secret", content_name(f"{base}-store", credentials), credentials,
                               CREDENTIALS_PATH, 0o400))
    if token is not None:
        out.append(SwarmObject("secret", content_name(f"{base}-token", token), token, TOKEN_PATH, 0o400))
    return out


def task_template(s: ServiceSettings, version: int, objs: list[SwarmObject],
                  ids: dict[str, str]) -> dict[str, Any]:
    """The TaskTemplate: the agent wraps the image's entrypoint; health = intended version AVAILABLE."""
    container: dict[str, Any] = {
        "Image": s.image,
        "Command": ["python", AGENT_PATH, "serve", REPLICA_SPEC_PATH, "--"],
        "Args": server_args(s),
        "Env": [f"TFR_SERVING_HOST={s.host}"],
        "Labels": labels(s, version),
        "Init": True,
        "CapabilityAdd": ["CAP_SYS_PTRACE"],  # the agent's pidfd_getfd on its own child (drain)
        "StopGracePeriod": int((s.stop_grace_s + s.drain_s) * SECOND_NS),
        "Healthcheck": healthcheck(s, ["CMD", "python", AGENT_PATH, "health", REPLICA_SPEC_PATH]),
    }
    return task_spec(container, objs, ids)


def task_version(task: dict[str, Any]) -> int | None:
    """The model version a task was started for (from its container labels)."""
    raw = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels", {}).get(VERSION_LABEL)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Applied:
    """A spec written to the swarm: what was done, the service's name, how many replicas to wait for."""

    action: str
    name: str
    replicas: int


@dataclass(frozen=True)
class Convergence:
    """Where a service stands, from its UpdateStatus and its tasks (pure)."""

    done: bool
    ok: bool
    version: int | None
    running: dict[int, int]
    detail: str


def converged(service: dict[str, Any], tasks: list[dict[str, Any]], replicas: int) -> Convergence:
    """Done once swarm has finished (update completed / rolled back / paused) and exactly
    `replicas` tasks of the spec's version run (healthy: swarm reports a task with a health
    check as running only after it passed); ok when that version is the one asked for."""
    spec_version = int(service["Spec"]["Labels"][VERSION_LABEL])
    state = (service.get("UpdateStatus") or {}).get("State", "")
    message = (service.get("UpdateStatus") or {}).get("Message", "")
    running: dict[int, int] = {}
    for t in tasks:
        if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running":
            v = task_version(t)
            if v is not None:
                running[v] = running.get(v, 0) + 1
    settled = running == {spec_version: replicas}
    if state in ("paused", "rollback_paused"):
        return Convergence(True, False, spec_version, running, f"update {state}: {message}")
    if state in ("", "completed", "rollback_completed") and settled:
        return Convergence(True, state != "rollback_completed", spec_version, running,
                           f"{state or 'created'}: {message}".rstrip(": "))
    return Convergence(False, False, spec_version, running, f"{state or 'creating'}: running {running} {message}")
