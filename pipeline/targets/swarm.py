"""Swarm target: one replicated model service per model on a Docker Swarm (docker SDK).

The config-reload machine (`pipeline/rollout/machine.py`) drives one runtime through its
ModelService; a replicated service cannot be driven that way (the shared port reaches one
replica at random). Here the *service spec* is the unit of change: a rollout writes a spec
pinned to the new version and lets swarm roll it (start-first, one replica at a time,
health-gated, `failure_action: rollback`); this module only writes specs and watches swarm
converge. The spec itself is built in `swarm_spec` (pure); the replica side is
`swarm_agent` (fetch + verify + health), shipped into the replicas as a config object.

Two ways a replica gets its version (`rollout.swarm_fetch`): "agent" runs the agent inside each
replica (needs Python in the serving image: ours); "sidecar" is for images without Python (the
official tensorflow/serving): a global service `<service>-fetch` (rollout.fetch_image) runs the
agent's `fetch` mode into a per-model volume `<service>-models` on every node; a rollout first
updates that service and waits until it holds the verified version on every node, and only then
starts the canary and updates the serving service, whose replicas mount the volume read-only and
run nothing but bash and the image's entrypoint. Sidecar mode cannot drain a stopping replica
(see `swarm_spec`): without client retries a few requests fail per replaced replica.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import RolloutConfig, StorageConfig
from pipeline.errors import RolloutError, TfRolloutError
from pipeline.lock_slot import LockHolder
from pipeline.targets import swarm_spec as spec
from pipeline.targets.base import OUR_IMAGE_PREFIX, ServingTarget
from pipeline.targets.docker import engine_client

AGENT_SOURCE = Path(__file__).with_name("swarm_agent.py")
MANIFEST_NAME = "tfrollout.manifest.json"
# (endpoint, version) -> (ok, reason): e.g. the golden set against that endpoint
Check = Callable[[str, int], tuple[bool, str]]


@dataclass
class SwarmReport:
    """What a swarm rollout did, for the run record and `--json`."""

    model: str
    version: int
    service: str
    action: str = ""
    previous: int | None = None
    ok: bool = False
    rolled_back: bool = False
    duration_s: float = 0.0
    detail: str = ""
    replicas: list[dict[str, Any]] = field(default_factory=list)
    canary: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    fetch: dict[str, Any] | None = None  # sidecar mode: the fetch service's update
    cleanup_pending: str | None = None  # converged on the version; clean-up after it still failed

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


CLEANUP_ATTEMPTS = 3


def retried(step: Callable[[], Any], attempts: int, pause_s: float = 1.0) -> Exception | None:
    """Run a clean-up step up to `attempts` times; None once it succeeds, else the last error."""
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            step()
            return None
        except Exception as exc:  # noqa: BLE001 - after the commit point every failure is retried, then owed
            error = exc
            if attempt + 1 < attempts:
                time.sleep(pause_s * (attempt + 1))
    return error


def joined(*notes: str | None) -> str | None:
    """Several clean-up notes as one line (None when there are none)."""
    present = [n for n in notes if n]
    return "; ".join(present) or None


class SwarmRolloutFailed(RolloutError):
    """The new spec did not converge; swarm rolled back (or the first deploy was removed)."""

    def __init__(self, message: str, report: SwarmReport) -> None:
        super().__init__(message)
        self.report = report
        self.details = report.to_json()


def store_ref(storage: StorageConfig) -> spec.StoreRef:
    """The store as the replicas reach it: only S3-compatible stores (a replica has no shared disk)."""
    from pipeline.storage.uri import parse_uri

    uri = parse_uri(storage.uri)
    if uri.scheme != "s3":
        raise RolloutError(f"rollout.target = swarm needs an s3:// store (replicas fetch their model "
                           f"themselves); storage.uri is {storage.uri}")
    addressing = storage.addressing_style
    if addressing == "auto":
        addressing = "path" if storage.endpoint_url else "virtual"
    return spec.StoreRef(uri.bucket, uri.prefix, storage.endpoint_url, storage.region or "us-east-1", addressing)


def store_credentials(storage: StorageConfig) -> bytes | None:
    """The caller's AWS credentials as the replicas' secret (None: anonymous GETs)."""
    import boto3

    session = boto3.Session(profile_name=storage.profile) if storage.profile else boto3.Session()
    creds = session.get_credentials()
    if creds is None:
        return None
    frozen = creds.get_frozen_credentials()
    return json.dumps({"access_key": frozen.access_key, "secret_key": frozen.secret_key,
                       "session_token": frozen.token or ""}, sort_keys=True).encode()


class SwarmTarget(ServingTarget):
    kind = "swarm"

    def __init__(self, cfg: RolloutConfig, client: Any | None = None, *, poll_s: float = 0.5) -> None:
        super().__init__(cfg)
        self._client = client
        self.poll_s = poll_s

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = engine_client(self.cfg)
        return self._client

    def settings(self, model: str) -> spec.ServiceSettings:
        c = self.cfg
        return spec.ServiceSettings(prefix=c.service_name, model=model, image=c.image, grpc_port=c.grpc_port,
                                    replicas=c.replicas, host=c.host, monitor_s=c.swarm_monitor_s,
                                    health_interval_s=c.swarm_health_interval_s, start_period_s=c.start_timeout_s,
                                    admin_token=self.admin_protected(), serving_args=tuple(c.serving_args),
                                    mode=c.swarm_mode)

    @property
    def fetch_mode(self) -> str:
        """"agent" or "sidecar" (rollout.swarm_fetch, auto by image)."""
        return spec.resolve_fetch(self.cfg.swarm_fetch, self.cfg.image, OUR_IMAGE_PREFIX)

    def fetch_settings(self, model: str) -> spec.ServiceSettings:
        """The sidecar fetch service: global (every node gets the files), in the fetch image."""
        image = self.cfg.fetch_image
        if image is None:
            if not self.cfg.image.startswith(OUR_IMAGE_PREFIX):
                raise RolloutError(f"rollout.swarm_fetch = sidecar with rollout.image = {self.cfg.image}: set "
                                   "rollout.fetch_image to an image with python3 >= 3.11 (e.g. the tfrollout "
                                   "model-server image) — it runs the fetch service that fills the model volume")
            image = self.cfg.image
        return dataclasses.replace(self.settings(model), role=spec.FETCH_ROLE, image=image, mode="global",
                                   admin_token=False)

    def admin_protected(self) -> bool:
        if self.cfg.admin_api == "auto":
            return self.cfg.image.startswith(OUR_IMAGE_PREFIX)
        return self.cfg.admin_api == "token"

    # ------------------------------------------------------------- swarm objects
    def require_manager(self) -> None:
        info = self.client.info().get("Swarm") or {}
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            raise RolloutError("rollout.target = swarm: the engine is not a swarm manager (state "
                               f"{info.get('LocalNodeState') or 'inactive'}); `docker swarm init "
                               "--advertise-addr 127.0.0.1 ...` first")

    def _service(self, model: str) -> Any | None:
        return self._by_name(spec.service_name(self.cfg.service_name, model))

    def _by_name(self, name: str) -> Any | None:
        import docker

        try:
            service = self.client.services.get(name)
        except docker.errors.NotFound:
            return None
        return service if service.name == name else None  # get() also matches an id prefix

    def _services(self) -> list[Any]:
        """Our services; none on an engine that is not a swarm manager (so `serve stop` there is a no-op)."""
        import docker

        try:
            return list(self.client.services.list(
                filters={"label": f"{spec.SERVICE_LABEL}={self.cfg.service_name}"}))
        except docker.errors.APIError as exc:
            if exc.status_code == 503:  # "This node is not a swarm manager"
                return []
            raise

    def _ensure_objects(self, s: spec.ServiceSettings, objs: list[spec.SwarmObject]) -> dict[str, str]:
        """Create missing configs/secrets (content-named: an existing name has the same content)."""
        import docker

        ids: dict[str, str] = {}
        for obj in objs:
            coll = self.client.configs if obj.kind == "config" else self.client.secrets
            found = [o for o in coll.list(filters={"name": obj.name}) if o.name == obj.name]
            if found:
                ids[obj.name] = found[0].id
                continue
            try:
                created = coll.create(name=obj.name, data=obj.data, labels=spec.labels(s))
            except docker.errors.APIError as exc:
                raise RolloutError(f"cannot create swarm {obj.kind} {obj.name}: {exc.explanation or exc}") from None
            ids[obj.name] = created.id
        return ids

    def _current_token(self, service: Any | None) -> spec.SwarmObject | None:
        """The admin-token secret the running spec uses (secrets cannot be read back: keep using it)."""
        if service is None:
            return None
        refs = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
        for ref in refs:
            if ref["File"]["Name"] == spec.TOKEN_PATH:
                return spec.SwarmObject("secret", ref["SecretName"], b"", spec.TOKEN_PATH, 0o400)
        return None

    def tasks(self, model: str) -> list[dict[str, Any]]:
        return list(self.client.api.tasks(filters={"service": spec.service_name(self.cfg.service_name, model)}))

    # ------------------------------------------------------------- rollout
    def _spec(self, s: spec.ServiceSettings, version: int, manifest: bytes, storage: StorageConfig,
              service: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TaskTemplate, create/update kwargs) for `version`, its objects created on the swarm.
        The admin token is the running service's (a secret cannot be read back), else a new one."""
        token_ref = self._current_token(service)
        token = None
        if s.admin_token and token_ref is None:
            token = (secrets.token_urlsafe(32) + "\n").encode()
        sidecar = self.fetch_mode == "sidecar"
        if sidecar:
            objs = spec.sidecar_objects(s, version, token=token, stable_label=self.cfg.stable_label)
        else:
            objs = spec.objects(s, version, hashlib.sha256(manifest).hexdigest(), store_ref(storage),
                                agent_source=AGENT_SOURCE.read_bytes(), credentials=store_credentials(storage),
                                token=token, stable_label=self.cfg.stable_label)
        ids = self._ensure_objects(s, objs)
        if token_ref is not None:
            ids[token_ref.name] = self._secret_id(token_ref.name)
            objs.append(token_ref)
        template = (spec.sidecar_task_template if sidecar else spec.task_template)(s, version, objs, ids)
        kwargs = {"name": spec.settings_service(s), "labels": spec.labels(s, version),
                  "mode": spec.service_mode(s),
                  "update_config": spec.update_config(s), "rollback_config": spec.rollback_config(s)}
        return template, kwargs

    def rollout(self, model: str, version: int, storage: StorageConfig, *, check: Check | None = None,
                canary_port: int | None = None, timeout_s: float | None = None) -> SwarmReport:
        """Make every replica serve `version` (committed in the store) or leave the previous spec serving.

        With `check` (endpoint, version) -> (ok, reason): an update first runs the new version
        as a one-replica canary service on `canary_port` (default grpc_port + 1) and checks it
        there, directly — on the shared port a replica takes traffic as soon as it listens, so
        health gating alone cannot keep a wrong-output version from clients. Only a canary that
        passes lets swarm roll the service. A first deploy is checked on the service itself.
        Holds the rollout lock throughout (unless the caller already holds it)."""
        self.require_manager()
        owned = not self._locked
        if owned:
            self.lock(f"tfrollout rollout {model} v{version}", self.cfg.lock_stale_s)
        try:
            report = self._rollout(model, version, storage, check, canary_port, timeout_s)
        except BaseException:
            if owned:
                self.release_lock()  # the rollout's own error is the one to report
            raise
        if owned:
            report.cleanup_pending = joined(report.cleanup_pending, self.release_lock())
        return report

    def release_lock(self) -> str | None:
        """Unlock, retried; None, or why the lock stays (its holder is this process: once it has
        exited, the next rollout breaks the lock as a crashed holder's)."""
        error = retried(self.unlock, CLEANUP_ATTEMPTS)
        return None if error is None else (f"rollout lock not released after {CLEANUP_ATTEMPTS} attempts: "
                                           f"{error}; the next rollout breaks it")

    def _rollout(self, model: str, version: int, storage: StorageConfig, check: Check | None,
                 canary_port: int | None, timeout_s: float | None) -> SwarmReport:
        t0 = time.monotonic()
        s = self.settings(model)
        report = SwarmReport(model, int(version), spec.settings_service(s))
        manifest = self._manifest(storage, model, version)
        service = self._service(model)
        previous = self.served_version(model)
        report.previous = previous
        if previous == version and service is not None:
            report.action, report.ok = "already-stable", True
            report.replicas = self.replicas(model)
            return report
        if self.fetch_mode == "sidecar":
            report.fetch = self._fetch(model, version, manifest, previous, storage)
            if not report.fetch["ok"]:
                report.action = "update" if service is not None else "first-deploy"
                report.duration_s = round(time.monotonic() - t0, 3)
                report.detail = f"fetch failed: {report.fetch['detail']}; the serving service was not touched"
                report.replicas = self.replicas(model)
                raise SwarmRolloutFailed(f"swarm rollout of {model} version {version} failed: {report.detail}; "
                                         f"{report.fetch.get('logs', '')}", report)
        if service is not None and check is not None:
            report.canary = self._canary(s, version, manifest, storage, service, check, canary_port)
            if not report.canary["ok"]:
                report.action, report.duration_s = "update", round(time.monotonic() - t0, 3)
                report.detail = f"canary failed: {report.canary['reason']}; the service was not touched"
                report.replicas = self.replicas(model)
                raise SwarmRolloutFailed(f"swarm rollout of {model} version {version} failed: {report.detail}",
                                         report)
        template, kwargs = self._spec(s, version, manifest, storage, service)
        if service is None:
            report.action = "first-deploy"
            self.client.api.create_service(template, **kwargs)
        else:
            report.action = "update"
            service.reload()
            self.client.api.update_service(service.id, service.attrs["Version"]["Index"], task_template=template,
                                           **kwargs)
        want = self.wanted_replicas(s)
        limit = timeout_s or (self.cfg.start_timeout_s + want * (self.cfg.load_timeout_s + s.monitor_s))
        state = self.wait(spec.settings_service(s), want, limit)
        report.replicas = self.replicas(model)
        report.detail = state.detail
        if state.ok and state.version == version and report.action == "first-deploy" and check is not None:
            ok, reason = check(self.endpoint, version)
            report.verify = {"ok": ok, "reason": reason, "endpoint": self.endpoint}
            if not ok:
                state = spec.Convergence(True, False, version, state.running, f"verification failed: {reason}")
                report.detail = state.detail
        report.duration_s = round(time.monotonic() - t0, 3)
        if state.ok and state.version == version:
            report.ok = True  # the commit point: every replica serves the verified version; never undone
            error = retried(lambda: self._drop_unused(s), CLEANUP_ATTEMPTS)
            if error is not None:
                report.cleanup_pending = (f"removing unused configs/secrets failed after {CLEANUP_ATTEMPTS} "
                                          f"attempts: {error}; the next rollout, rollback or status retries")
            return report
        if report.action == "first-deploy":
            self._remove(spec.settings_service(s))
            if self.fetch_mode == "sidecar":
                self._remove(spec.settings_service(self.fetch_settings(model)))
            report.detail += "; first deploy failed: service removed, nothing is served"
        else:
            report.rolled_back = state.version != version
        raise SwarmRolloutFailed(f"swarm rollout of {model} version {version} failed: {report.detail}"
                                 f"{'; ' + self.logs(40) if not report.rolled_back else ''}", report)

    def _fetch(self, model: str, version: int, manifest: bytes, previous: int | None,
               storage: StorageConfig) -> dict[str, Any]:
        """Sidecar mode: point the fetch service at `version` (plus the version serving now: swarm's
        rollback target must stay on disk) and wait until it is healthy on every node, i.e. every
        node's volume holds the verified bytes. A version that cannot be proven fails the fetch
        task: swarm rolls the fetch service back (an update) or we remove it (first deploy)."""
        t0 = time.monotonic()
        fs = self.fetch_settings(model)
        name = spec.settings_service(fs)
        versions = [(int(version), hashlib.sha256(manifest).hexdigest())]
        note = ""
        if previous is not None and previous != version:
            try:
                versions.append((int(previous), hashlib.sha256(self._manifest(storage, model, previous)).hexdigest()))
            except TfRolloutError as exc:  # e.g. removed from the store: the nodes keep what they hold now
                note = f"v{previous} (serving now) left out of the fetch spec: {exc}"
        objs = spec.fetch_objects(fs, versions, store_ref(storage), agent_source=AGENT_SOURCE.read_bytes(),
                                  credentials=store_credentials(storage))
        ids = self._ensure_objects(fs, objs)
        template = spec.fetch_task_template(fs, version, objs, ids)
        kwargs = {"name": name, "labels": spec.labels(fs, version), "mode": spec.service_mode(fs),
                  "update_config": spec.update_config(fs), "rollback_config": spec.rollback_config(fs)}
        service = self._by_name(name)
        if service is not None and service.attrs["Spec"].get("TaskTemplate") == template:
            action = "unchanged"
        elif service is None:
            action = "create"
            self.client.api.create_service(template, **kwargs)
        else:
            action = "update"
            self.client.api.update_service(service.id, service.attrs["Version"]["Index"], task_template=template,
                                           **kwargs)
        want = self.wanted_replicas(fs)
        state = self.wait(name, want, self.cfg.start_timeout_s + want * (self.cfg.deliver_timeout_s + fs.monitor_s),
                          fail_fast=action == "create")
        out = {"ok": state.ok and state.version == version, "action": action, "service": name,
               "versions": [v for v, _ in versions], "nodes": want, "detail": state.detail,
               "duration_s": round(time.monotonic() - t0, 3)}
        if note:
            out["note"] = note
        if not out["ok"]:
            out["logs"] = self._service_logs(name, 40)
            if action == "create":
                self._remove(name)
        return out

    def _canary(self, main: spec.ServiceSettings, version: int, manifest: bytes, storage: StorageConfig,
                service: Any, check: Check, port: int | None) -> dict[str, Any]:
        """Run `version` as a one-replica service on its own port, check it there, remove it."""
        t0 = time.monotonic()
        s = dataclasses.replace(main, role="canary", replicas=1, grpc_port=port or main.grpc_port + 1,
                                mode="replicated")
        name = spec.settings_service(s)
        endpoint = f"{self.cfg.host}:{s.grpc_port}"
        template, kwargs = self._spec(s, version, manifest, storage, service)
        self._remove(name)  # a crashed rollout's leftover
        self.client.api.create_service(template, **kwargs)
        try:
            state = self.wait(name, 1, self.cfg.start_timeout_s + self.cfg.load_timeout_s, fail_fast=True)
            if not (state.ok and state.version == version):
                return {"ok": False, "reason": f"canary replica not healthy: {state.detail}", "endpoint": endpoint,
                        "duration_s": round(time.monotonic() - t0, 3), "logs": self._service_logs(name, 40)}
            ok, reason = check(endpoint, version)
            return {"ok": ok, "reason": reason, "endpoint": endpoint, "duration_s": round(time.monotonic() - t0, 3)}
        finally:
            self._remove(name)

    def service(self, model: str) -> str:
        """The model's service name."""
        return spec.service_name(self.cfg.service_name, model)

    def drop_canary(self, model: str) -> bool:
        """Remove the canary service a crashed rollout left (True if there was one)."""
        s = dataclasses.replace(self.settings(model), role="canary")
        name = spec.settings_service(s)
        if self._by_name(name) is None:
            return False
        self._remove(name)
        return True

    def wanted_replicas(self, s: spec.ServiceSettings) -> int:
        """Replicated: rollout.replicas; global: one per node that can take tasks."""
        if s.mode != "global":
            return s.replicas
        nodes = self.client.nodes.list()
        return sum(1 for n in nodes if n.attrs["Spec"].get("Availability") == "active"
                   and n.attrs["Status"].get("State") == "ready")

    def _manifest(self, storage: StorageConfig, model: str, version: int) -> bytes:
        """The committed manifest's bytes (its sha256 is pinned into the spec)."""
        from pipeline.storage import open_store
        from pipeline.storage.manifest import VersionManifest

        store = open_store(storage)
        data = store.get_bytes(f"{model}/{version}/{MANIFEST_NAME}")
        VersionManifest.loads(data, f"{model} version {version}")
        return data

    def _secret_id(self, name: str) -> str:
        found = [o for o in self.client.secrets.list(filters={"name": name}) if o.name == name]
        if not found:
            raise RolloutError(f"the service's admin-token secret {name} is gone")
        return str(found[0].id)

    def wait(self, name: str, replicas: int, timeout_s: float, *, fail_fast: bool = False) -> spec.Convergence:
        """Poll until swarm has finished the create/update/rollback of service `name`, or the deadline;
        with `fail_fast` (the canary) the first failed task ends the wait (swarm would retry it forever)."""
        deadline = time.monotonic() + timeout_s
        while True:
            service = self._by_name(name)
            if service is None:
                raise RolloutError(f"service {name} disappeared")
            tasks = list(self.client.api.tasks(filters={"service": name}))
            state = spec.converged(service.attrs, tasks, replicas)
            if state.done:
                return state
            failed = [t for t in tasks if (t.get("Status") or {}).get("State") in ("failed", "rejected")]
            if fail_fast and failed:
                status = failed[0]["Status"]
                return spec.Convergence(True, False, state.version, state.running,
                                        f"task {status.get('State')}: {status.get('Err') or status.get('Message')}")
            if time.monotonic() > deadline:
                return spec.Convergence(True, False, state.version, state.running,
                                        f"not converged after {timeout_s:.0f} s ({state.detail})")
            time.sleep(self.poll_s)

    def served_version(self, model: str) -> int | None:
        """The version the service's current spec pins (None: no service)."""
        service = self._service(model)
        if service is None:
            return None
        raw = service.attrs["Spec"].get("Labels", {}).get(spec.VERSION_LABEL)
        return int(raw) if raw else None

    def replicas(self, model: str) -> list[dict[str, Any]]:
        """Per replica: slot, node, version, state, container — what `status` shows."""
        nodes: dict[str, str] = {}
        out = []
        for t in self.tasks(model):
            if t.get("DesiredState") != "running":
                continue
            node = t.get("NodeID", "")
            if node and node not in nodes:
                nodes[node] = self.client.nodes.get(node).attrs["Description"]["Hostname"]
            status = t.get("Status") or {}
            out.append({"slot": t.get("Slot"), "node": nodes.get(node, node), "version": spec.task_version(t),
                        "state": status.get("State"), "error": status.get("Err"),
                        "container": (status.get("ContainerStatus") or {}).get("ContainerID", "")[:12]})
        return sorted(out, key=lambda r: (r["slot"] or 0, r["version"] or 0))

    def finish_clean_up(self, model: str) -> str | None:
        """For `status`: remove what an earlier rollout's clean-up left (unused configs/secrets),
        under the rollout lock; a one-line outcome, or None when nothing was left."""
        s = self.settings(model)
        if not self._unused(s):
            return None  # the usual case: no lock taken
        try:
            self.lock(f"tfrollout status {model} (clean-up)", self.cfg.lock_stale_s)
        except RolloutError as exc:  # someone is rolling out: their rollout cleans up
            return f"clean-up pending, not finished now: {exc}"
        try:
            error = retried(lambda: self._drop_unused(s), CLEANUP_ATTEMPTS)
        finally:
            self.release_lock()
        return "finished clean-up an earlier rollout owed" if error is None else \
            f"clean-up pending, not finished now: {error}"

    def _unused(self, s: spec.ServiceSettings) -> list[Any]:
        """This model's configs/secrets neither the spec nor the previous spec (rollback) uses."""
        used: set[str] = set()
        fetch = spec.service_name(s.prefix, s.model) + f"-{spec.FETCH_ROLE}"
        for service in (self._service(s.model), self._by_name(fetch)):
            if service is None:
                continue
            for key in ("Spec", "PreviousSpec"):
                c = (service.attrs.get(key) or {}).get("TaskTemplate", {}).get("ContainerSpec", {})
                used |= {r["ConfigName"] for r in c.get("Configs") or []}
                used |= {r["SecretName"] for r in c.get("Secrets") or []}
        selector = {"label": [f"{spec.SERVICE_LABEL}={s.prefix}", f"{spec.MODEL_LABEL}={s.model}"]}
        return [obj for coll in (self.client.configs, self.client.secrets) for obj in coll.list(filters=selector)
                if obj.name not in used and obj.name != self._lock_name]

    def _drop_unused(self, s: spec.ServiceSettings) -> None:
        """Remove this model's unused objects (a connection failure raises: the caller retries)."""
        import docker

        for obj in self._unused(s):
            try:
                obj.remove()
            except docker.errors.APIError:
                pass  # still referenced by a task being shut down: next rollout removes it

    # ------------------------------------------------------------- ServingTarget
    def delivered_path(self, model: str) -> str:
        return f"/models/{model}"

    def start(self) -> None:
        raise RolloutError("the swarm target starts replicas through `rollout` (a service spec), not `start`")

    def running(self) -> bool:
        """A serving replica runs (the sidecar fetch service serves nothing)."""
        return any(t.get("Status", {}).get("State") == "running"
                   for svc in self._services() if not self._is_fetch(svc)
                   for t in self.client.api.tasks(filters={"service": svc.id}))

    @staticmethod
    def _is_fetch(svc: Any) -> bool:
        return bool(svc.attrs["Spec"].get("Labels", {}).get(spec.ROLE_LABEL) == spec.FETCH_ROLE)

    def read_config(self) -> str | None:
        """The model config every replica of every service of ours reads (merged)."""
        texts = []
        for svc in self._services():
            for ref in svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs") or []:
                if ref["File"]["Name"] == spec.MODEL_CONFIG_PATH:
                    data = self.client.configs.get(ref["ConfigID"]).attrs["Spec"]["Data"]
                    texts.append(base64.b64decode(data).decode())
        if not texts:
            return None
        from serving import tfs_config

        merged = tfs_config.build_model_server_config([])
        for text in texts:
            merged.model_config_list.config.extend(tfs_config.parse_model_server_config(text).model_config_list.config)
        return tfs_config.to_text(merged)

    def write_config(self, text: str | None) -> None:
        raise RolloutError("the swarm target is changed through service specs (SwarmTarget.rollout), "
                           "not by writing a model config")

    def deliver(self, model: str, version: int, source: Path) -> None:
        raise RolloutError("swarm replicas fetch their version from the store themselves")

    def versions(self, model: str) -> list[int]:
        v = self.served_version(model)
        return [v] if v is not None else []

    def logs(self, tail: int) -> str:
        return "\n".join(self._service_logs(svc.name, tail) for svc in self._services())

    def _remove(self, name: str) -> None:
        service = self._by_name(name)
        if service is not None:
            service.remove()

    def _service_logs(self, name: str, tail: int) -> str:
        try:
            raw = self.client.api.service_logs(name, stdout=True, stderr=True, tail=tail, timestamps=False)
            return b"".join(raw).decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - logs are best effort
            return f"(logs of {name} unavailable: {exc})"

    def stop(self) -> None:
        """Remove our services, then every config/secret of ours once no task uses it."""
        self.purge()

    def purge(self, timeout_s: float = 60.0) -> list[str]:
        """Remove our services, their configs/secrets, and (sidecar mode) the model volumes on *this*
        engine once no container uses them. A volume is local to each node's engine: the copies on
        other nodes can only be removed from those engines (`docker volume rm <service>-models` there)."""
        import docker

        if not (self.client.info().get("Swarm") or {}).get("ControlAvailable"):
            return []  # not a swarm manager: nothing of ours can be there
        removed = []
        for svc in self._services():
            svc.remove()
            removed.append(f"service {svc.name}")
        deadline = time.monotonic() + timeout_s
        selector = {"label": f"{spec.SERVICE_LABEL}={self.cfg.service_name}"}
        while True:
            left = []
            for kind, coll in (("config", self.client.configs), ("secret", self.client.secrets),
                               ("volume", self.client.volumes)):
                for obj in coll.list(filters=selector):
                    if obj.name == self._lock_name and self._locked:
                        continue
                    try:
                        obj.remove()
                        removed.append(f"{kind} {obj.name}")
                    except docker.errors.NotFound:
                        pass
                    except docker.errors.APIError:
                        left.append(f"{kind} {obj.name}")  # in use until the service's containers are gone
            if not left:
                return removed
            if time.monotonic() > deadline:
                raise RolloutError(f"swarm objects still in use after {timeout_s:.0f} s: {', '.join(left)}")
            time.sleep(self.poll_s)

    # ------------------------------------------------------------- lock: a config object (names are unique)
    @property
    def _lock_name(self) -> str:
        return f"{self.cfg.service_name}-rollout-lock"

    def lock_records(self) -> LockConfig:
        return LockConfig(self.client, self._lock_name, self.cfg.service_name)

    def lock_where(self) -> str:
        return f"swarm service(s) {self.cfg.service_name}-*"

    def describe(self) -> dict[str, Any]:
        services = {}
        for svc in self._services():
            model = svc.attrs["Spec"]["Labels"].get(spec.MODEL_LABEL, "")
            if self._is_fetch(svc):
                raw = svc.attrs["Spec"]["Labels"].get(spec.VERSION_LABEL)
                services[svc.name] = {"model": model, "role": spec.FETCH_ROLE, "version": int(raw) if raw else None,
                                      "update": (svc.attrs.get("UpdateStatus") or {}).get("State", "")}
                continue
            services[svc.name] = {"model": model, "version": self.served_version(model),
                                  "update": (svc.attrs.get("UpdateStatus") or {}).get("State", ""),
                                  "replicas": self.replicas(model)}
        return {"target": self.kind, "endpoint": self.endpoint, "running": self.running(),
                "admin_api": "token" if self.admin_protected() else "open", "image": self.cfg.image,
                "wanted_replicas": self.cfg.replicas, "services": services}


class LockConfig:
    """The swarm's rollout lock: a config object (names are unique in the swarm) holding the holder."""

    def __init__(self, client: Any, name: str, service_name: str):
        self.client = client
        self.name = name
        self.service_name = service_name

    def _found(self) -> list[Any]:
        return [c for c in self.client.configs.list(filters={"name": self.name}) if c.name == self.name]

    def create(self, holder: LockHolder) -> bool:
        import docker

        try:
            self.client.configs.create(name=self.name, data=json.dumps(holder.to_json()).encode(),
                                       labels={spec.MANAGED: "lock", spec.SERVICE_LABEL: self.service_name})
            return True
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise RolloutError(f"cannot take the rollout lock: {exc.explanation or exc}") from None
            return False

    def read(self) -> LockHolder | None:
        found = self._found()
        if not found:
            return None
        try:
            holder = LockHolder.from_json(json.loads(base64.b64decode(found[0].attrs["Spec"]["Data"])))
        except ValueError:
            holder = None
        return holder or LockHolder.unreadable("unreadable lock config")

    def remove(self) -> bool:
        import docker

        for c in self._found():
            try:
                c.remove()
                return True
            except docker.errors.NotFound:
                return False
        return False
