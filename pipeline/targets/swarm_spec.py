"""The swarm service spec of one model (pure: dicts shaped as the Engine API wants them).

Everything a replica needs travels in the spec, so swarm can (re)start a replica on any
node without the pipeline: the model config and the replica's fetch spec are swarm
config objects, the store credentials and the admin token are swarm secrets, the
agent script is a config object too. Objects are immutable and named by content hash,
so an update creates new ones and a rollback finds the previous ones still there.

Networking: host networking (`Networks: [{Target: host}]`, no published ports). All
replicas on a node bind the same gRPC port; the kernel spreads new connections over
them with SO_REUSEPORT (a stopping replica's listener leaves the group; with the host's
net.ipv4.tcp_migrate_req=1 the connections queued on it move to a sibling, else they are reset). Our model server turns SO_REUSEPORT off by default (a port
conflict must be an error there), so the swarm spec turns it back on through
`--grpc_channel_arguments`. REST is off (`--rest_api_port=0`): the server's REST
listener (Python's ThreadingHTTPServer) sets SO_REUSEADDR only, so a second replica
on the node could not bind it. Each replica also listens on a UNIX socket inside its
own container: the health check asks *its own* server there (the TCP port may answer
for a sibling).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from serving import tfs_config

SECOND_NS = 1_000_000_000
MANAGED = "org.tfrollout.managed"
SERVICE_LABEL = "org.tfrollout.service"
MODEL_LABEL = "org.tfrollout.model"
VERSION_LABEL = "org.tfrollout.version"
ROLE_LABEL = "org.tfrollout.role"
AGENT_PATH = "/tfr/agent.py"
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


def replica_spec(s: ServiceSettings, model: str, version: int, manifest_sha256: str, store: StoreRef,
                 *, credentials: bool) -> dict[str, Any]:
    """What the agent reads: which bytes to fetch and prove, where to put them, how to ask for health."""
    return {"model": model, "version": int(version), "manifest_sha256": manifest_sha256,
            "store": store.to_json(), "models_dir": s.models_dir, "socket": SOCKET_PATH,
            "health_file": HEALTH_FILE,
            "exec": [ENTRYPOINT], "port": s.grpc_port, "drain_s": s.drain_s, "credentials_file": CREDENTIALS_PATH if credentials else None,
            "token_file": TOKEN_PATH if s.admin_token else None}


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


def _healthcheck(s: ServiceSettings, test: list[str]) -> dict[str, Any]:
    """Docker's HEALTHCHECK for a replica: `test` every health_interval_s, unhealthy after 3 misses."""
    return {"Test": test, "Interval": int(s.health_interval_s * SECOND_NS), "Timeout": 5 * SECOND_NS,
            "Retries": 3, "StartPeriod": int(s.start_period_s * SECOND_NS)}


def _task(container: dict[str, Any], objs: list[SwarmObject], ids: dict[str, str]) -> dict[str, Any]:
    """The TaskTemplate around `container`: its config/secret references, host networking, always restarted."""
    container["Configs"] = [_reference(o, ids[o.name]) for o in objs if o.kind == "config"]
    secrets = [_reference(o, ids[o.name]) for o in objs if o.kind == "secret"]
    if secrets:
        container["Secrets"] = secrets
    return {"ContainerSpec": container, "Networks": [{"Target": "host"}],
            "RestartPolicy": {"Condition": "any", "Delay": SECOND_NS, "MaxAttempts": 0},
            "ForceUpdate": 0}


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
        "Healthcheck": _healthcheck(s, ["CMD", "python", AGENT_PATH, "health", REPLICA_SPEC_PATH]),
    }
    return _task(container, objs, ids)


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


# ----------------------------------------------------------------------------- sidecar fetch
# rollout.swarm_fetch = "sidecar": for images without Python (the official tensorflow/serving image has
# bash and its entrypoint script, no python, no curl; TF Serving >= 2.7 cannot read s3:// either).
# A global fetch service (an image with python3, running the agent's `fetch` mode) fetches and verifies
# the committed version(s) into a per-model named volume on every node; the serving service mounts that
# volume read-only and runs only the image's entrypoint under bash. What that costs against agent mode:
# - no drain on SIGTERM: nothing in the serving container can take its listener out of the port's
#   SO_REUSEPORT group first (the agent does it with pidfd_getfd), so while a replica stops, a few
#   requests sent on its connections fail unless clients retry (the e2e test counts them);
# - REST cannot be off: the bash health check speaks HTTP to TF Serving's REST port (bash cannot
#   speak gRPC), so each replica listens on its own free REST port (REST_PORT_RANGE, host networking;
#   the official server binds it on every address, ours on TFR_SERVING_HOST), picked from
#   /proc/net/tcp{,6} at start — two replicas racing for the same port lose one start to a restart;
# - the health check asks the replica's own REST port, so it is per replica as in agent mode, but a
#   replica that cannot load its version is not stopped at once (TF Serving keeps listening on the
#   shared gRPC port with nothing loaded until swarm replaces the unhealthy task);
# - volumes live on each node's engine: `serve stop`/purge can remove the volume only on the engine it
#   talks to (the manager); other nodes' copies must be removed on those engines.
FETCH_ROLE = "fetch"
FETCH_SPEC_PATH = "/tfr/fetch.json"
REST_PORT_FILE = "/tmp/tfr-rest-port"
REST_PORT_RANGE = (20000, 29999)  # below Linux's ephemeral range (32768-60999): no clash with outgoing sockets
SIDECAR_PROGRAM = "tfr-serving"  # $0 of the serving container's `bash -c`


def resolve_fetch(setting: str, image: str, our_prefix: str) -> str:
    """"agent" (Python agent inside each replica: our image) or "sidecar" (fetch service + plain image)."""
    if setting in ("agent", "sidecar"):
        return setting
    return "agent" if image.startswith(our_prefix) else "sidecar"


def volume_name(prefix: str, model: str) -> str:
    """The per-model named volume the fetch service fills and the serving replicas read (one per node)."""
    return f"{service_name(prefix, model)}-models"


def fetch_spec(s: ServiceSettings, versions: list[tuple[int, str]], store: StoreRef, *,
               credentials: bool) -> dict[str, Any]:
    """What the agent's `fetch` mode reads: every version (with its manifest sha256) the serving
    service may run — the new one and the one serving now (swarm's rollback target)."""
    return {"model": s.model, "versions": [{"version": int(v), "manifest_sha256": sha} for v, sha in versions],
            "store": store.to_json(), "models_dir": s.models_dir,
            "credentials_file": CREDENTIALS_PATH if credentials else None}


def fetch_objects(fs: ServiceSettings, versions: list[tuple[int, str]], store: StoreRef, *,
                  agent_source: bytes, credentials: bytes | None) -> list[SwarmObject]:
    """The fetch service's configs/secrets (`fs` has role "fetch")."""
    base = settings_service(fs)
    data = json.dumps(fetch_spec(fs, versions, store, credentials=credentials is not None), sort_keys=True).encode()
    out = [SwarmObject("config", content_name(f"{base}-agent", agent_source), agent_source, AGENT_PATH),
           SwarmObject("config", content_name(f"{base}-v{versions[0][0]}-spec", data), data, FETCH_SPEC_PATH)]
    if credentials is not None:
        out.append(SwarmObject("secret", content_name(f"{base}-store", credentials), credentials,
                               CREDENTIALS_PATH, 0o400))
    return out


def volume_mount(s: ServiceSettings, *, read_only: bool) -> dict[str, Any]:
    """The model volume (created by the engine of each node on first use, labelled for purge)."""
    return {"Type": "volume", "Source": volume_name(s.prefix, s.model), "Target": s.models_dir,
            "ReadOnly": read_only,
            "VolumeOptions": {"NoCopy": True, "Labels": {MANAGED: "1", SERVICE_LABEL: s.prefix, MODEL_LABEL: s.model}}}


def fetch_task_template(fs: ServiceSettings, version: int, objs: list[SwarmObject],
                        ids: dict[str, str]) -> dict[str, Any]:
    """One fetcher per node (global): fetch + verify into the volume, then idle; healthy once every
    wanted version directory is complete. Host networking: it reaches the store like the agent does."""
    container: dict[str, Any] = {
        "Image": fs.image,
        "Command": ["python3", AGENT_PATH, "fetch", FETCH_SPEC_PATH],
        "Labels": labels(fs, version),
        "Init": True,
        "StopGracePeriod": 10 * SECOND_NS,
        "Healthcheck": _healthcheck(fs, ["CMD", "python3", AGENT_PATH, "fetched", FETCH_SPEC_PATH]),
        "Mounts": [volume_mount(fs, read_only=False)],
    }
    return _task(container, objs, ids)


def sidecar_objects(s: ServiceSettings, version: int, *, token: bytes | None, stable_label: str) -> list[SwarmObject]:
    """The serving service's objects in sidecar mode: the pinned model config (+ the admin token)."""
    base = settings_service(s)
    config = model_config_text(s.model, version, s.models_dir, stable_label).encode()
    out = [SwarmObject("config", content_name(f"{base}-v{version}-models", config), config, MODEL_CONFIG_PATH)]
    if token is not None:
        out.append(SwarmObject("secret", content_name(f"{base}-token", token), token, TOKEN_PATH, 0o400))
    return out


def sidecar_server_args(s: ServiceSettings) -> list[str]:
    """TF Serving flags as in agent mode (shared gRPC port, pinned config), minus the agent's socket;
    the REST port is appended by the start script."""
    return [a for a in server_args(s) if not a.startswith(("--rest_api_port=", "--grpc_socket_path="))]


def sidecar_start_script(port_file: str = REST_PORT_FILE, entrypoint: str = ENTRYPOINT) -> str:
    """bash only: pick a REST port nobody on this host listens on, note it for the health check,
    exec the image's entrypoint with the flags ("$@") and that port (the last flag wins)."""
    low, high = REST_PORT_RANGE
    return (
        "used=' '\n"
        "for t in /proc/net/tcp /proc/net/tcp6; do\n"
        "  [ -r \"$t\" ] || continue\n"
        "  { read -r _; while read -r _ addr _ st _; do\n"
        "      [ \"$st\" = 0A ] && used+=\"$((16#${addr##*:})) \"\n"
        "    done; } < \"$t\"\n"
        "done\n"
        "port=''\n"
        "for ((i = 0; i < 200; i++)); do\n"
        f"  p=$(( {low} + (RANDOM * 32768 + RANDOM) % {high - low + 1} ))\n"
        "  case \"$used\" in *\" $p \"*) ;; *) port=$p; break;; esac\n"
        "done\n"
        "[ -n \"$port\" ] || { echo 'tfr-serving: no free REST port' >&2; exit 1; }\n"
        f"echo \"$port\" > {port_file}\n"
        f"exec {entrypoint} \"$@\" --rest_api_port=\"$port\"\n")


def sidecar_health_script(model: str, version: int, port_file: str = REST_PORT_FILE, host: str = "127.0.0.1") -> str:
    """bash only (/dev/tcp): healthy iff this replica's REST port says `version` is AVAILABLE."""
    path = f"/v1/models/{model}/versions/{int(version)}"
    return (
        f"port=$(< {port_file}) || exit 1\n"
        f"exec 3<>/dev/tcp/{host}/\"$port\" || exit 1\n"
        f"printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' >&3\n"
        "IFS= read -r -d '' -t 4 resp <&3\n"
        "cr=$'\\r'\n"
        "[[ $resp == HTTP/1.?\\ 200* ]] || { echo \"unhealthy: ${resp%%\"$cr\"*}\"; exit 1; }\n"
        f"[[ $resp =~ \\\"version\\\"[[:space:]]*:[[:space:]]*\\\"?{int(version)}\\\"?[[:space:]]*, ]] || "
        "{ echo 'unhealthy: version not reported'; exit 1; }\n"
        "[[ $resp =~ \\\"state\\\"[[:space:]]*:[[:space:]]*\\\"AVAILABLE\\\" ]] || "
        "{ echo 'unhealthy: not AVAILABLE'; exit 1; }\n"
        f"echo 'healthy: {model} version {int(version)} AVAILABLE'\n")


def sidecar_task_template(s: ServiceSettings, version: int, objs: list[SwarmObject],
                          ids: dict[str, str]) -> dict[str, Any]:
    """The serving replica with no agent: `bash -c <start script> tfr-serving <flags>` execs the image's
    entrypoint; the model volume is read-only; health = bash + /dev/tcp against its own REST port.
    TINI_KILL_PROCESS_GROUP: the official entrypoint runs tensorflow_model_server as a child of bash
    (no exec); the init then forwards SIGTERM to the whole group, so the server stops gracefully
    instead of being killed with the container."""
    container: dict[str, Any] = {
        "Image": s.image,
        "Command": ["bash", "-c", sidecar_start_script(), SIDECAR_PROGRAM],
        "Args": sidecar_server_args(s),
        "Env": [f"TFR_SERVING_HOST={s.host}", "TINI_KILL_PROCESS_GROUP=1"],
        "Labels": labels(s, version),
        "Init": True,
        "StopGracePeriod": int(s.stop_grace_s * SECOND_NS),
        "Healthcheck": _healthcheck(s, ["CMD", "bash", "-c", sidecar_health_script(s.model, version)]),
        "Mounts": [volume_mount(s, read_only=True)],
    }
    return _task(container, objs, ids)
