"""Docker target: TF Serving (or the offline image) in a container, models in a named volume.

No shared filesystem is assumed (the engine may be remote): versions are pulled
from the store here, sha256-verified, and streamed into the volume with
`put_archive`; the config file and a version index live in the volume too. The
rollout lock is a never-started container named `<container>-rollout-lock`
(container names are unique per engine, so creating it is atomic). The engine
connection itself is `targets.engine` (re-exported here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.lock_slot import LockHolder
from pipeline.targets.base import CONFIG_NAME, OUR_IMAGE_PREFIX, TOKEN_NAME, ReloadableTarget
from pipeline.targets.engine import API_VERSION as API_VERSION
from pipeline.targets.engine import created_unless_taken, engine_client, engine_settings
from pipeline.targets.engine import forget_engine_clients as forget_engine_clients
from pipeline.targets.engine import ssh_url_with_config_port as ssh_url_with_config_port
from pipeline.targets.engine import unreachable_hint as unreachable_hint
from pipeline.targets.tarball import build_tar, read_member, version_tar

MARKER = ".tfrollout-delivered"
INDEX = ".tfrollout-index.json"
LABEL = "org.tfrollout.managed"
HOLDER_LABEL = "org.tfrollout.lock-holder"


class DockerTarget(ReloadableTarget):
    kind = "docker"

    def __init__(self, cfg: RolloutConfig, client: Any | None = None) -> None:
        super().__init__(cfg)
        self._client = client
        self.mount = cfg.models_mount.rstrip("/")
        self._token: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = engine_client(self.cfg)
        return self._client

    def delivered_path(self, model: str) -> str:
        return f"{self.mount}/{model}"

    def admin_protected(self) -> bool:
        """'auto' protects only tfrollout's image: tensorflow/serving has no --admin_token_file."""
        if self.cfg.admin_api == "auto":
            return self.cfg.image.startswith(OUR_IMAGE_PREFIX)
        return self.cfg.admin_api == "token"

    def admin_token(self) -> str | None:
        """Read from the volume, so any machine that can drive the engine can also roll out."""
        if not self.admin_protected():
            return None
        if self._token is None:
            data = self._get(f"{self.mount}/{TOKEN_NAME}")
            self._token = data.decode().strip() or None if data else None
        return self._token

    def _install_token(self) -> None:
        """Put a fresh token (0600) into the volume before the runtime first starts."""
        import secrets

        if self.admin_token():
            return
        token = secrets.token_urlsafe(32)
        self._put(build_tar([(TOKEN_NAME, (token + "\n").encode())], mtime=time.time(), mode=0o600))
        self._token = token

    # ------------------------------------------------------------- container
    def _container(self) -> Any | None:
        import docker

        try:
            return self.client.containers.get(self.cfg.container_name)
        except docker.errors.NotFound:
            return None

    def _ensure_image(self) -> None:
        import docker

        try:
            self.client.images.get(self.cfg.image)
        except docker.errors.ImageNotFound:
            if not self.cfg.pull_image:
                raise RolloutError(f"image {self.cfg.image} not on the engine and rollout.pull_image is off"
                                   ) from None
            try:
                self.client.images.pull(self.cfg.image)
            except docker.errors.APIError as exc:
                raise RolloutError(f"cannot pull {self.cfg.image}: {exc.explanation or exc}") from None

    def command(self) -> list[str]:
        """Args appended to the image's entrypoint (TF Serving flags)."""
        args = [f"--model_config_file={self.mount}/{CONFIG_NAME}", "--file_system_poll_wait_seconds=1"]
        if self.cfg.network_mode == "host":  # the container owns the host's ports: pick them
            args[:0] = [f"--port={self.cfg.grpc_port}", f"--rest_api_port={self.cfg.rest_port or 8501}"]
        if self.admin_protected():
            args += self.admin_args(f"{self.mount}/{TOKEN_NAME}")
        return [*args, *self.cfg.serving_args]

    def _ensure_container(self) -> Any:
        import docker

        found = self._container()
        if found is not None:
            return found
        self._ensure_image()
        try:
            self.client.volumes.get(self.cfg.volume)
        except docker.errors.NotFound:
            self.client.volumes.create(self.cfg.volume, labels={LABEL: "1"})
        kwargs: dict[str, Any] = {}
        if self.cfg.network_mode == "host":
            kwargs["network_mode"] = "host"
            env = {"TFR_SERVING_HOST": self.cfg.host}
        else:
            ports = {"8500/tcp": (self.cfg.host, self.cfg.grpc_port)}
            if self.cfg.rest_port:
                ports["8501/tcp"] = (self.cfg.host, self.cfg.rest_port)
            kwargs["ports"] = ports
            env = {"TFR_SERVING_HOST": "0.0.0.0"}
        try:
            return self.client.containers.create(
                self.cfg.image, command=self.command(), name=self.cfg.container_name, detach=True,
                environment=env, volumes={self.cfg.volume: {"bind": self.mount, "mode": "rw"}},
                labels={LABEL: "1"}, init=True, restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
                **kwargs)
        except docker.errors.APIError as exc:
            raise RolloutError(f"cannot create container {self.cfg.container_name}: "
                               f"{exc.explanation or exc}") from None

    def start(self) -> None:
        container = self._ensure_container()
        if self.admin_protected():
            self._install_token()
        container.reload()
        if container.status != "running":
            container.start()

    def running(self) -> bool:
        container = self._container()
        if container is None:
            return False
        return container.status == "running"

    def stop(self) -> None:
        container = self._container()
        if container is not None and container.status == "running":
            container.stop(timeout=30)

    def purge(self) -> list[str]:
        """Remove everything `serve stop` leaves on the engine: the container, its lock, the volume."""
        existing = [f"container {self.cfg.container_name}"] if self._container() is not None else []
        if self._volume_exists():
            existing.append(f"volume {self.cfg.volume}")
        self.destroy(volume=True)
        return existing

    def _volume_exists(self) -> bool:
        import docker

        try:
            self.client.volumes.get(self.cfg.volume)
            return True
        except docker.errors.NotFound:
            return False

    def destroy(self, volume: bool = True) -> None:
        """Remove the container, the lock and (optionally) the volume (tests, `serve purge`)."""
        import docker

        for name in (self.cfg.container_name, LockContainer(self).name):
            try:
                self.client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        if volume:
            try:
                self.client.volumes.get(self.cfg.volume).remove(force=True)
            except docker.errors.NotFound:
                pass

    def logs(self, tail: int) -> str:
        container = self._container()
        if container is None:
            return ""
        return container.logs(tail=tail).decode(errors="replace")

    # ------------------------------------------------------------- files in the volume
    def _get(self, path: str) -> bytes | None:
        import docker

        container = self._container()
        if container is None:
            return None
        try:
            stream, _ = container.get_archive(path)
        except docker.errors.NotFound:
            return None
        return read_member(b"".join(stream), path.rsplit("/", 1)[-1])

    def _put(self, data: bytes) -> None:
        container = self._ensure_container()
        if not container.put_archive(self.mount, data):
            raise RolloutError(f"put_archive into {self.cfg.container_name}:{self.mount} failed")

    def read_config(self) -> str | None:
        data = self._get(f"{self.mount}/{CONFIG_NAME}")
        text = data.decode() if data else ""
        return text if text.strip() else None

    def write_config(self, text: str | None) -> None:
        self._put(build_tar([(CONFIG_NAME, (text or "").encode())], mtime=time.time()))

    def _index(self) -> dict[str, list[int]]:
        data = self._get(f"{self.mount}/{INDEX}")
        try:
            return json.loads(data) if data else {}
        except ValueError:
            return {}

    def deliver(self, model: str, version: int, source: Path) -> None:
        marker = (MARKER, json.dumps({"version": version, "at": time.time()}).encode())
        self._put(version_tar(source, model, version, marker))
        index = self._index()
        index[model] = sorted(set(index.get(model, [])) | {int(version)})
        self._put(build_tar([(INDEX, json.dumps(index).encode())], mtime=time.time()))

    def versions(self, model: str) -> list[int]:
        return sorted(self._index().get(model, []))

    # ------------------------------------------------------------- lock
    def lock_records(self) -> LockContainer:
        return LockContainer(self)

    def lock_where(self) -> str:
        return str(self.cfg.container_name)

    def describe(self) -> dict[str, Any]:
        container = self._container()
        info: dict[str, Any] = {"target": self.kind, "endpoint": self.endpoint,
                                "admin_api": "token" if self.admin_protected() else "open",
                                "running": bool(container and container.status == "running"),
                                "engine": engine_settings(self.cfg)["base_url"], "image": self.cfg.image,
                                "container": self.cfg.container_name, "volume": self.cfg.volume}
        if container is not None:
            state = container.attrs.get("State", {})
            info.update(status=container.status, exit_code=state.get("ExitCode"),
                        started_at=state.get("StartedAt"),
                        supervisor={"state": "docker restart policy on-failure",
                                    "restarts": int(container.attrs.get("RestartCount", 0) or 0),
                                    "last_exit_code": state.get("ExitCode"),
                                    "oom_killed": bool(state.get("OOMKilled"))})
        return info


class LockContainer:
    """The Docker host's rollout lock: a stopped container whose name is unique on the engine
    and whose labels name the holder."""

    def __init__(self, target: DockerTarget):
        self.target = target
        self.name = f"{target.cfg.container_name}-rollout-lock"

    def create(self, holder: LockHolder) -> bool:
        self.target._ensure_image()
        return created_unless_taken(lambda: self.target.client.containers.create(
            self.target.cfg.image, command=["true"], name=self.name, network_mode="none", entrypoint=["true"],
            labels={LABEL: "lock", "org.tfrollout.lock-owner": holder.owner,
                    "org.tfrollout.lock-at": str(holder.at), HOLDER_LABEL: json.dumps(holder.to_json())}))

    def read(self) -> LockHolder | None:
        import docker

        try:
            labels = self.target.client.containers.get(self.name).labels or {}
        except docker.errors.NotFound:
            return None
        try:
            holder = LockHolder.from_json(json.loads(labels.get(HOLDER_LABEL, "")))
        except ValueError:
            holder = None
        if holder is None:  # a lock taken by an older tfrollout: owner text and time only
            try:
                at = float(labels.get("org.tfrollout.lock-at", "0") or 0)
            except ValueError:
                at = 0.0
            holder = LockHolder(labels.get("org.tfrollout.lock-owner", "unknown"), "", None, at)
        return holder

    def remove(self) -> bool:
        import docker

        try:
            self.target.client.containers.get(self.name).remove(force=True)
            return True
        except docker.errors.NotFound:
            return False
