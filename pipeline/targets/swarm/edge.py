"""The swarm rollout's Docker side: writing the specs a rollout decides on (`rollout.swarm_engine`).

`SwarmRolloutEdge` binds a `SwarmTarget` to the store a rollout reads: it builds each
spec (the pure parts in `swarm_spec`), creates the configs/secrets it names and writes
it to the swarm; waiting, listing and removing are the target's own. Nothing here
decides whether a step should happen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from typing import Any

from pipeline.config import StorageConfig
from pipeline.errors import RolloutError
from pipeline.targets.swarm import spec
from pipeline.targets.swarm.target import SwarmTarget
from serving.agent.bundle import agent_bundle
from serving.agent.manifest import MANIFEST_NAME


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


class SwarmRolloutEdge:
    """One rollout's hands on the swarm: the target plus the store its replicas fetch from."""

    def __init__(self, target: SwarmTarget, storage: StorageConfig) -> None:
        self.target, self.storage = target, storage
        self.endpoint = target.endpoint
        self.fetch_mode = target.fetch_mode
        # what the target already offers, as the engine calls it
        self.require_manager, self.lock, self.unlock = target.require_manager, target.lock, target.unlock
        self.service, self.has_service, self.has_service_named = (target.service, target.has_service,
                                                                  target.has_service_named)
        self.served_version, self.replicas = target.served_version, target.replicas
        self.canary_name, self.fetch_name = target.canary_name, target.fetch_name
        self.wait, self.remove, self.service_logs, self.logs = (target.wait, target.remove, target.service_logs,
                                                                target.logs)
        self.drop_unused = target.drop_unused

    def manifest(self, model: str, version: int) -> bytes:
        """The committed manifest's bytes (its sha256 is pinned into the spec)."""
        from pipeline.storage import open_store
        from pipeline.storage.manifest import VersionManifest

        data = open_store(self.storage).get_bytes(f"{model}/{version}/{MANIFEST_NAME}")
        VersionManifest.loads(data, f"{model} version {version}")
        return data

    def _spec(self, s: spec.ServiceSettings, version: int, manifest: bytes,
              service: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TaskTemplate, create/update kwargs) for `version`, its objects created on the swarm.
        The admin token is the running service's (a secret cannot be read back), else a new one."""
        t = self.target
        token_ref = t.current_token(service)
        token = None
        if s.admin_token and token_ref is None:
            token = (secrets.token_urlsafe(32) + "\n").encode()
        sidecar = self.fetch_mode == "sidecar"
        if sidecar:
            objs = spec.sidecar_objects(s, version, token=token, stable_label=t.cfg.stable_label)
        else:
            objs = spec.objects(s, version, hashlib.sha256(manifest).hexdigest(), store_ref(self.storage),
                                agent_source=agent_bundle(), credentials=store_credentials(self.storage),
                                token=token, stable_label=t.cfg.stable_label)
        ids = t.ensure_objects(s, objs)
        if token_ref is not None:
            ids[token_ref.name] = t.secret_id(token_ref.name)
            objs.append(token_ref)
        template = (spec.sidecar_task_template if sidecar else spec.task_template)(s, version, objs, ids)
        return template, _service_kwargs(s, version)

    def apply_service(self, model: str, version: int, manifest: bytes) -> spec.Applied:
        """Create the model's service pinned to `version`, or update it (swarm rolls the replicas)."""
        t = self.target
        s = t.settings(model)
        service = t.service_object(model)
        template, kwargs = self._spec(s, version, manifest, service)
        if service is None:
            t.client.api.create_service(template, **kwargs)
            action = "first-deploy"
        else:
            service.reload()
            t.client.api.update_service(service.id, service.attrs["Version"]["Index"], task_template=template,
                                        **kwargs)
            action = "update"
        return spec.Applied(action, spec.settings_service(s), t.wanted_replicas(s))

    def start_canary(self, model: str, version: int, manifest: bytes, port: int) -> spec.Applied:
        """`version` as a one-replica service of its own on `port`."""
        t = self.target
        s = dataclasses.replace(t.settings(model), role="canary", replicas=1, grpc_port=port, mode="replicated")
        template, kwargs = self._spec(s, version, manifest, t.service_object(model))
        t.client.api.create_service(template, **kwargs)
        return spec.Applied("create", spec.settings_service(s), 1)

    def apply_fetch(self, model: str, version: int, versions: list[tuple[int, bytes]]) -> spec.Applied:
        """Sidecar mode: the global fetch service pinned to `versions` ((number, manifest) pairs)."""
        t = self.target
        fs = t.fetch_settings(model)
        name = spec.settings_service(fs)
        pinned = [(number, hashlib.sha256(data).hexdigest()) for number, data in versions]
        objs = spec.fetch_objects(fs, pinned, store_ref(self.storage), agent_source=agent_bundle(),
                                  credentials=store_credentials(self.storage))
        ids = t.ensure_objects(fs, objs)
        template = spec.fetch_task_template(fs, version, objs, ids)
        kwargs = _service_kwargs(fs, version)
        service = t.service_named(name)
        if service is not None and service.attrs["Spec"].get("TaskTemplate") == template:
            action = "unchanged"
        elif service is None:
            action = "create"
            t.client.api.create_service(template, **kwargs)
        else:
            action = "update"
            t.client.api.update_service(service.id, service.attrs["Version"]["Index"], task_template=template,
                                        **kwargs)
        return spec.Applied(action, name, t.wanted_replicas(fs))


def _service_kwargs(s: spec.ServiceSettings, version: int) -> dict[str, Any]:
    return {"name": spec.settings_service(s), "labels": spec.labels(s, version), "mode": spec.service_mode(s),
            "update_config": spec.update_config(s), "rollback_config": spec.rollback_config(s)}
