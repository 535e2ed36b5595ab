"""The one interface every serving target implements (the rollout machine's hands)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.lock_slot import HolderRecords, LockHolder, RolloutLock

if TYPE_CHECKING:
    from pipeline.config import RolloutConfig

LOCK_NAME = ".tfrollout-rollout.lock"
CONFIG_NAME = "models.config"
TOKEN_NAME = ".tfrollout-admin.token"
OUR_IMAGE_PREFIX = "tfrollout/"


class ServingTarget(ABC):
    """A serving host as status, stop, purge, gc and the rollout lock see it (every target)."""

    kind: str = "abstract"

    def __init__(self, cfg: RolloutConfig) -> None:
        self.cfg = cfg
        self._rollout_lock: RolloutLock | None = None

    @property
    def endpoint(self) -> str:
        """host:port of the runtime's gRPC API, as reachable from here."""
        return f"{self.cfg.host}:{self.cfg.grpc_port}"

    def base_path(self, model: str) -> str:
        """The model's base path as the server sees it: the store passthrough, else where `deliver` puts it."""
        if self.cfg.model_base_path:
            return f"{self.cfg.model_base_path.rstrip('/')}/{model}"
        return self.delivered_path(model)

    def admin_protected(self) -> bool:
        """Whether the runtime is started with a ModelService token and confined base paths."""
        return self.cfg.admin_api == "token"

    def admin_args(self, token_file: str) -> list[str]:
        """Model-server flags that close the admin API: token + reloads confined to our roots."""
        roots = [self.delivered_path("").rstrip("/")]
        if self.cfg.model_base_path:
            roots.append(self.cfg.model_base_path.rstrip("/"))
        return [f"--admin_token_file={token_file}", f"--model_base_path_prefix={','.join(roots)}"]

    def admin_token(self) -> str | None:
        """The bearer token ModelService calls need, or None when the admin API is open."""
        return None

    @abstractmethod
    def delivered_path(self, model: str) -> str:
        """Where delivered versions of `model` live, as the server sees that path."""

    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def read_config(self) -> str | None:
        """The persisted `model_config_list` text, or None when there is none."""

    @abstractmethod
    def versions(self, model: str) -> list[int]:
        """Version directories completely delivered to the host."""

    @abstractmethod
    def logs(self, tail: int) -> str: ...

    # ---------------------------------------------------------------- rollout lock
    @abstractmethod
    def lock_records(self) -> HolderRecords:
        """Where this host keeps its rollout lock record."""

    @abstractmethod
    def lock_where(self) -> str:
        """The host as lock messages name it."""

    @property
    def rollout_lock(self) -> RolloutLock:
        if self._rollout_lock is None:
            self._rollout_lock = RolloutLock(self.lock_records(), self.lock_where())
        return self._rollout_lock

    @property
    def _locked(self) -> bool:
        return self._rollout_lock is not None and self._rollout_lock.held

    def holder(self) -> LockHolder | None:
        """Who holds the rollout lock (None: nobody)."""
        return self.rollout_lock.holder()

    def lock(self, owner: str, stale_after_s: float) -> None:
        """Take the host's rollout lock or raise RolloutError naming the holder."""
        self.rollout_lock.acquire(owner, stale_after_s)

    def unlock(self) -> None:
        self.rollout_lock.release()

    def force_unlock(self, *, even_if_alive: bool = False) -> bool:
        """Remove a crashed rollout's lock; True if one existed.

        A holder provably still running on this machine is refused (RolloutError)
        unless `even_if_alive`.
        """
        return self.rollout_lock.force_remove(even_if_alive=even_if_alive)

    @abstractmethod
    def stop(self) -> None:
        """Stop the runtime gracefully (delivered files and config stay)."""

    @abstractmethod
    def purge(self) -> list[str]:
        """Stop the runtime and remove everything it left (files, container, volume); what was removed."""

    def describe(self) -> dict[str, Any]:
        """Health facts for `tfrollout status`."""
        return {"target": self.kind, "endpoint": self.endpoint, "running": self.running(),
                "admin_api": "token" if self.admin_protected() else "open"}


class ReloadableTarget(ServingTarget):
    """One runtime started with `--model_config_file`, changed by writing that file and reloading:
    what the config-reload machine drives (local process, Docker container). A replicated service
    (swarm) is not one of these: its spec is the unit of change."""

    @abstractmethod
    def start(self) -> None:
        """Start the runtime (its config file must already be written); returns without waiting."""

    @abstractmethod
    def write_config(self, text: str | None) -> None:
        """Persist (or with None remove) the config file a restarted runtime reads."""

    @abstractmethod
    def deliver(self, model: str, version: int, source: Path) -> None:
        """Copy a verified version directory to the host, visible only when complete."""
