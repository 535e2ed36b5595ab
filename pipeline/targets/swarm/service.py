"""What every swarm service spec of a model shares, agent or sidecar mode (pure: dicts shaped as
the Engine API wants them): the settings, the content-named configs/secrets, labels, the update and
rollback policy, the model server's flags, and the task wrapper around a container.

Split out of `swarm_spec` so that the sidecar builders (`swarm_fetch_spec`) and the agent-mode
builders (`swarm_spec`) both stand on it; `swarm_spec` re-exports every name here.

Networking: host networking (`Networks: [{Target: host}]`, no published ports). All
replicas on a node bind the same gRPC port; the kernel spreads new connections over
them with SO_REUSEPORT (a stopping replica's listener leaves the group; with the host's
net.ipv4.tcp_migrate_req=1 the connections queued on it move to a sibling, else they are reset). Our model server turns SO_REUSEPORT off by default (a port
conflict must be an error there), so the spec turns it back on through
`--grpc_channel_arguments`. REST is off (`--rest_api_port=0`): the server's REST
listener (Python's ThreadingHTTPServer) sets SO_REUSEADDR only, so a second replica
on the node could not bind it. Each replica also listens on a UNIX socket inside its
own container: the health check asks *its own* server there (the TCP port may answer
for a sibling).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from serving import tfs_config

SECOND_NS = 1_000_000_000
MANAGED = "org.tfrollout.managed"
SERVICE_LABEL = "org.tfrollout.service"
MODEL_LABEL = "org.tfrollout.model"
VERSION_LABEL = "org.tfrollout.version"
ROLE_LABEL = "org.tfrollout.role"
AGENT_PATH = "/tfr/agent.pyz"  # the agent bundle (a zip python runs), see serving.agent.bundle
REPLICA_SPEC_PATH = "/tfr/replica.json"
MODEL_CONFIG_PATH = "/tfr/models.config"
SOCKET_PATH = "/tmp/tfr-grpc.sock"
HEALTH_FILE = "/tmp/tfr-health.json"
CREDENTIALS_PATH = "/run/secrets/tfr-store-credentials"
TOKEN_PATH = "/run/secrets/tfr-admin-token"
ENTRYPOINT = "/usr/bin/tf_serving_entrypoint.sh"


@dataclass(frozen=True)
class StoreRef:
    """Where replicas fetch from: an S3-compatible bucket + prefix (as reachable from the replicas)."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str
    addressing: str = "auto"

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint": self.endpoint,
                "region": self.region, "addressing": self.addressing}


@dataclass(frozen=True)
class ServiceSettings:
    """The few knobs of a replicated model service (from `[rollout]`)."""

    prefix: str  # rollout.service_name: labels every object of this deployment
    model: str
    image: str
    grpc_port: int
    replicas: int
    host: str = "127.0.0.1"
    monitor_s: float = 10.0
    health_interval_s: float = 2.0
    start_period_s: float = 120.0
    stop_grace_s: float = 30.0
    models_dir: str = "/models"
    admin_token: bool = True
    serving_args: tuple[str, ...] = ()
    # every connection gets a graceful GOAWAY after this long: clients re-spread over the
    # replicas, and a stopping replica's connections move away before it stops (see the agent)
    connection_age_s: float = 2.0
    role: str = ""  # "canary": a one-replica service on its own port, verified before the update
    mode: str = "replicated"  # or "global": one replica per node

    @property
    def drain_s(self) -> float:
        return self.connection_age_s * 1.2 + 2.0


@dataclass(frozen=True)
class SwarmObject:
    """A config or secret to create: its name is derived from its content."""

    kind: str  # "config" | "secret"
    name: str
    data: bytes
    target: str  # where the replica sees it
    mode: int = 0o444


def service_name(prefix: str, model: str) -> str:
    return f"{prefix}-{model}"


def settings_service(s: ServiceSettings) -> str:
    name = service_name(s.prefix, s.model)
    return f"{name}-{s.role}" if s.role else name


def content_name(base: str, data: bytes) -> str:
    """`base-<12 hex of sha256>`: equal content -> equal name, so objects are reused, never mutated."""
    return f"{base}-{hashlib.sha256(data).hexdigest()[:12]}"


def model_config_text(model: str, version: int, models_dir: str, stable_label: str) -> str:
    """One model, one pinned version, labelled stable: every replica of a spec serves exactly this."""
    entry = tfs_config.ModelEntry(model, f"{models_dir.rstrip('/')}/{model}", versions=(version,),
                                  labels={stable_label: version})
    return tfs_config.to_text(tfs_config.build_model_server_config([entry]))


def server_args(s: ServiceSettings) -> list[str]:
    """Model-server flags: shared gRPC port (SO_REUSEPORT on), private UNIX socket, no REST.

    `--max_num_load_retries=0`: a replica whose version fails to load fails its start at once
    (TF Serving: "Failed to start server", exit 255) instead of retrying for 5 × 60 s first;
    swarm's restart policy is the retry, and a canary's failed task ends its check early."""
    age_ms = int(s.connection_age_s * 1000)
    channel = f"grpc.so_reuseport=1,grpc.max_connection_age_ms={age_ms},grpc.max_connection_age_grace_ms=30000"
    args = [f"--port={s.grpc_port}", "--rest_api_port=0", f"--grpc_socket_path={SOCKET_PATH}",
            f"--model_config_file={MODEL_CONFIG_PATH}", f"--grpc_channel_arguments={channel}",
            "--max_num_load_retries=0"]
    if s.admin_token:
        args += [f"--admin_token_file={TOKEN_PATH}", f"--model_base_path_prefix={s.models_dir.rstrip('/')}"]
    return [*args, *s.serving_args]


def _reference(obj: SwarmObject, object_id: str) -> dict[str, Any]:
    key = "ConfigID" if obj.kind == "config" else "SecretID"
    name = "ConfigName" if obj.kind == "config" else "SecretName"
    return {key: object_id, name: obj.name, "File": {"Name": obj.target, "UID": "0", "GID": "0", "Mode": obj.mode}}


def labels(s: ServiceSettings, version: int | None = None) -> dict[str, str]:
    """Labels on the service, its tasks and its objects (`serve stop` finds everything by SERVICE_LABEL)."""
    out = {MANAGED: "1", SERVICE_LABEL: s.prefix, MODEL_LABEL: s.model}
    if s.role:
        out[ROLE_LABEL] = s.role
    if version is not None:
        out[VERSION_LABEL] = str(int(version))
    return out


def service_mode(s: ServiceSettings) -> dict[str, Any]:
    if s.mode == "global":
        return {"Global": {}}
    return {"Replicated": {"Replicas": s.replicas}}


def update_config(s: ServiceSettings) -> dict[str, Any]:
    """One replica at a time, new before old (capacity never drops), health-monitored, rolled back on failure."""
    return {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": int(s.monitor_s * SECOND_NS),
            "MaxFailureRatio": 0.0, "Order": "start-first"}


def rollback_config(s: ServiceSettings) -> dict[str, Any]:
    return {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": int(s.monitor_s * SECOND_NS),
            "MaxFailureRatio": 0.0, "Order": "start-first"}


def healthcheck(s: ServiceSettings, test: list[str]) -> dict[str, Any]:
    """Docker's HEALTHCHECK for a replica: `test` every health_interval_s, unhealthy after 3 misses."""
    return {"Test": test, "Interval": int(s.health_interval_s * SECOND_NS), "Timeout": 5 * SECOND_NS,
            "Retries": 3, "StartPeriod": int(s.start_period_s * SECOND_NS)}


def task_spec(container: dict[str, Any], objs: list[SwarmObject], ids: dict[str, str]) -> dict[str, Any]:
    """The TaskTemplate around `container`: its config/secret references, host networking, always restarted."""
    container["Configs"] = [_reference(o, ids[o.name]) for o in objs if o.kind == "config"]
    secrets = [_reference(o, ids[o.name]) for o in objs if o.kind == "secret"]
    if secrets:
        container["Secrets"] = secrets
    return {"ContainerSpec": container, "Networks": [{"Target": "host"}],
            "RestartPolicy": {"Condition": "any", "Delay": SECOND_NS, "MaxAttempts": 0},
            "ForceUpdate": 0}
