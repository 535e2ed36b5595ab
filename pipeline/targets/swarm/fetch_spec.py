"""The sidecar fetch mode's service specs (pure): the global fetch service and the plain serving replicas.

Split out of `swarm_spec` (which re-exports every name here): one mode's builders, on the
pieces both modes share (`swarm_service`).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.targets.swarm.service import (
    AGENT_PATH,
    CREDENTIALS_PATH,
    ENTRYPOINT,
    MANAGED,
    MODEL_CONFIG_PATH,
    MODEL_LABEL,
    SECOND_NS,
    SERVICE_LABEL,
    TOKEN_PATH,
    ServiceSettings,
    StoreRef,
    SwarmObject,
    content_name,
    healthcheck,
    labels,
    model_config_text,
    server_args,
    service_name,
    settings_service,
    task_spec,
)

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
        "Healthcheck": healthcheck(fs, ["CMD", "python3", AGENT_PATH, "fetched", FETCH_SPEC_PATH]),
        "Mounts": [volume_mount(fs, read_only=False)],
    }
    return task_spec(container, objs, ids)


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
        "Healthcheck": healthcheck(s, ["CMD", "bash", "-c", sidecar_health_script(s.model, version)]),
        "Mounts": [volume_mount(s, read_only=True)],
    }
    return task_spec(container, objs, ids)
