"""Swarm target: one replicated model service per model on a Docker Swarm (docker SDK).

The config-reload machine (`pipeline/rollout/machine.py`) drives one runtime through its
ModelService; a replicated service cannot be driven that way (the shared port reaches one
replica at random). Here the *service spec* is the unit of change: a rollout writes a spec
pinned to the new version and lets swarm roll it (start-first, one replica at a time,
health-gated, `failure_action: rollback`); this module only writes specs and watches swarm
converge. The spec itself is built in `swarm_spec` (pure); the replica side is
`serving.agent` (fetch + verify + health), shipped into the replicas as one zip in a config object.

Two ways a replica gets its version (`rollout.swarm_fetch`): "agent" runs the agent inside each
replica (needs Python in the serving image: ours); "sidecar" is for images without Python (the
official tensorflow/serving): a global service `<service>-fetch` (rollout.fetch_image) runs the
agent's `fetch` mode into a per-model volume `<service>-models` on every node; a rollout first
updates that service and waits until it holds the verified version on every node, and only then
starts the canary and updates the serving service, whose replicas mount the volume read-only and
run nothing but bash and the image's entrypoint. Sidecar mode cannot drain a stopping replica
(see `swarm_fetch_spec`): without client retries a few requests fail per replaced replica.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

from pipeline.cleanup import CLEANUP_ATTEMPTS, retried
from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.targets.base import OUR_IMAGE_PREFIX, ServingTarget
from pipeline.targets.engine import engine_client
from pipeline.targets.swarm import spec
from pipeline.targets.swarm.lock import LockConfig


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

    def service_object(self, model: str) -> Any | None:
        return self.service_named(spec.service_name(self.cfg.service_name, model))

    def service_named(self, name: str) -> Any | None:
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

    def ensure_objects(self, s: spec.ServiceSettings, objs: list[spec.SwarmObject]) -> dict[str, str]:
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

    def current_token(self, service: Any | None) -> spec.SwarmObject | None:
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

    def service(self, model: str) -> str:
        """The model's service name."""
        return spec.service_name(self.cfg.service_name, model)

    def canary_name(self, model: str) -> str:
        return spec.settings_service(dataclasses.replace(self.settings(model), role="canary"))

    def fetch_name(self, model: str) -> str:
        return spec.settings_service(self.fetch_settings(model))

    def has_service(self, model: str) -> bool:
        return self.service_object(model) is not None

    def has_service_named(self, name: str) -> bool:
        return self.service_named(name) is not None

    def drop_unused(self, model: str) -> None:
        self.drop_unused_objects(self.settings(model))

    def wanted_replicas(self, s: spec.ServiceSettings) -> int:
        """Replicated: rollout.replicas; global: one per node that can take tasks."""
        if s.mode != "global":
            return s.replicas
        nodes = self.client.nodes.list()
        return sum(1 for n in nodes if n.attrs["Spec"].get("Availability") == "active"
                   and n.attrs["Status"].get("State") == "ready")

    def secret_id(self, name: str) -> str:
        found = [o for o in self.client.secrets.list(filters={"name": name}) if o.name == name]
        if not found:
            raise RolloutError(f"the service's admin-token secret {name} is gone")
        return str(found[0].id)

    def wait(self, name: str, replicas: int, timeout_s: float, *, fail_fast: bool = False) -> spec.Convergence:
        """Poll until swarm has finished the create/update/rollback of service `name`, or the deadline;
        with `fail_fast` (the canary) the first failed task ends the wait (swarm would retry it forever)."""
        deadline = time.monotonic() + timeout_s
        while True:
            service = self.service_named(name)
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
        service = self.service_object(model)
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
            error = retried(lambda: self.drop_unused_objects(s), CLEANUP_ATTEMPTS)
        finally:
            retried(self.unlock, CLEANUP_ATTEMPTS)
        return "finished clean-up an earlier rollout owed" if error is None else \
            f"clean-up pending, not finished now: {error}"

    def _unused(self, s: spec.ServiceSettings) -> list[Any]:
        """This model's configs/secrets neither the spec nor the previous spec (rollback) uses."""
        used: set[str] = set()
        fetch = spec.service_name(s.prefix, s.model) + f"-{spec.FETCH_ROLE}"
        for service in (self.service_object(s.model), self.service_named(fetch)):
            if service is None:
                continue
            for key in ("Spec", "PreviousSpec"):
                c = (service.attrs.get(key) or {}).get("TaskTemplate", {}).get("ContainerSpec", {})
                used |= {r["ConfigName"] for r in c.get("Configs") or []}
                used |= {r["SecretName"] for r in c.get("Secrets") or []}
        selector = {"label": [f"{spec.SERVICE_LABEL}={s.prefix}", f"{spec.MODEL_LABEL}={s.model}"]}
        return [obj for coll in (self.client.configs, self.client.secrets) for obj in coll.list(filters=selector)
                if obj.name not in used and obj.name != self._lock_name]

    def drop_unused_objects(self, s: spec.ServiceSettings) -> None:
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



    def versions(self, model: str) -> list[int]:
        v = self.served_version(model)
        return [v] if v is not None else []

    def logs(self, tail: int) -> str:
        return "\n".join(self.service_logs(svc.name, tail) for svc in self._services())

    def remove(self, name: str) -> None:
        service = self.service_named(name)
        if service is not None:
            service.remove()

    def service_logs(self, name: str, tail: int) -> str:
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
