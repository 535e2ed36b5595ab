"""The I/O edge the rollout machine drives: a target + the runtime's gRPC ModelService + the store.

Config changes are applied with HandleReloadConfigRequest first and persisted to the
target's config file only when the reload succeeded, so the file always holds a set
the runtime accepted (a restarted runtime serves the same set). Other models in the
file are left as they are.

The runtime is spoken to through `serving.client` (this project's light client), not
the official tensorflow_serving stubs, so `status`, `rollback` and `serve stop` never
import TensorFlow; `tfs_config`'s ModelServerConfig is TF-free and is sent serialized.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import RolloutError
from pipeline.rollout.clock import Clock, Deadline, SystemClock
from pipeline.rollout.history import advanced, read_histories, with_histories
from pipeline.rollout.plan import Served
from pipeline.targets.base import ReloadableTarget, ServingTarget
from serving import tfs_config
from serving.client import ClientError, ModelNotFoundError, PredictionClient

# (model, version, dest) -> dest: a committed, sha256-verified copy of the version.
Fetcher = Callable[[str, int, Path], Path]


def served_from_config(text: str | None, model: str) -> Served | None:
    """Our model's entry of a model_config_list (pure)."""
    if not text:
        return None
    cfg = tfs_config.parse_model_server_config(text)
    for entry in cfg.model_config_list.config:
        if entry.name == model:
            versions = tuple(entry.model_version_policy.specific.versions)
            labels = {k: v for k, v in entry.version_labels.items() if v in versions}
            return Served(model, versions, labels)
    return None


def merged_config(text: str | None, served: Served | None, model: str, base_path: str):
    """The whole ModelServerConfig with our model's entry replaced (None removes it) (pure)."""
    entries: list[tfs_config.ModelEntry] = []
    if text:
        for e in tfs_config.parse_model_server_config(text).model_config_list.config:
            if e.name == model:
                continue
            policy = e.model_version_policy
            entries.append(tfs_config.ModelEntry(
                e.name, e.base_path,
                versions=tuple(policy.specific.versions) if policy.HasField("specific") else None,
                latest=policy.latest.num_versions or 1, all_versions=policy.HasField("all"),
                labels=dict(e.version_labels)))
    if served is not None:
        entries.append(tfs_config.ModelEntry(served.model, base_path, versions=served.versions,
                                             labels=dict(served.labels)))
    return tfs_config.build_model_server_config(entries)


def _why(err: ClientError) -> str:
    """The server's words with the gRPC code ("FAILED_PRECONDITION: ..."), else the client's line."""
    if err.details:
        return f"{err.code}: {err.details}" if err.code else err.details
    return str(err)


def read_served(target: ServingTarget, model: str) -> Served | None:
    """What the target's persisted model config serves for `model` (any target, swarm included)."""
    try:
        return served_from_config(target.read_config(), model)
    except Exception as exc:  # noqa: BLE001 - a corrupt file must not block a restore
        raise RolloutError(f"unreadable model config on the serving host: {exc}") from None


class ServingHost:
    """Implements the machine's `Host` protocol on a `ReloadableTarget`."""

    def __init__(self, target: ReloadableTarget, fetch: Fetcher | None, *, passthrough: bool = False,
                 lock_stale_s: float = 1800.0, clock: Clock | None = None,
                 store_versions: Callable[[str], list[int]] | None = None) -> None:
        """Delivery is explicit, so no caller has to patch it:
        - `fetch` given: missing versions are pulled from the store through it;
        - `passthrough=True`: the runtime reads the store itself (`rollout.model_base_path`),
          so every version counts as present and delivery does nothing;
        - neither (`fetch=None`): host-only, e.g. the store is unreachable: only versions
          already on the host can be served (restore and rollback still work) and delivering
          another one is a RolloutError naming it.
        `store_versions` (passthrough): the store's committed versions of a model — what the
        runtime can read, so what `rollback` may return to.
        """
        self.target, self.fetch, self.passthrough = target, fetch, passthrough
        self.store_versions = store_versions
        self.lock_stale_s = lock_stale_s
        self.clock = clock or SystemClock()
        self._client: PredictionClient | None = None

    @property
    def client(self) -> PredictionClient:
        """One channel to the runtime's gRPC port, opened on first use."""
        if self._client is None:
            self._client = PredictionClient(self.target.endpoint, check_signature=False,
                                            admin_token=self.target.admin_token())
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------- config
    def read(self, model: str) -> Served | None:
        return read_served(self.target, model)

    def _config(self, text: str | None, served: Served | None, model: str):
        return merged_config(text, served, model, self.target.base_path(model))

    def persist(self, served: Served | None, model: str) -> None:
        text = self.target.read_config()
        config = self._config(text, served, model)
        empty = not config.model_config_list.config
        self._write(text, None if empty else config, served, model)

    def apply(self, served: Served, timeout_s: float) -> None:
        """HandleReloadConfigRequest (blocks until loaded or failed), then persist the accepted set."""
        text = self.target.read_config()
        config = self._reload(served, timeout_s, text)
        self._write(text, config, served, served.model)

    def _write(self, old_text: str | None, config: Any | None, served: Served | None, model: str) -> None:
        """The config file, with the promotion history (read from `old_text`, the file as it was)
        advanced by the stable it names (history.py)."""
        histories = read_histories(old_text)
        if served is not None:
            histories[model] = advanced(histories.get(model, []), served.stable)
        text = None if config is None else with_histories(tfs_config.to_text(config), histories)
        self.target.write_config(text)

    def promotions(self, model: str) -> list[int]:
        """The versions verified as stable, oldest first (see pipeline/rollout/history.py)."""
        return read_histories(self.target.read_config()).get(model, [])

    def reload(self, served: Served, timeout_s: float) -> None:
        """The runtime takes `served` (the file is written apart: see Machine's commit point)."""
        self._reload(served, timeout_s)

    def _reload(self, served: Served, timeout_s: float, text: str | None = None) -> Any:
        """`text`: the config file already read by the caller (read here when not given)."""
        config = self._config(self.target.read_config() if text is None else text, served, served.model)
        try:
            self.client.reload_config(config.SerializeToString(), deadline=timeout_s)
        except ClientError as err:
            raise RolloutError(f"config reload on {self.target.endpoint} failed: {_why(err)}") from None
        return config

    # ------------------------------------------------------------- runtime
    def running(self) -> bool:
        return self.target.running()

    def start(self, served: Served | None, timeout_s: float) -> None:
        """Write the config, start the runtime, wait until its gRPC port answers."""
        if served is not None:
            self.persist(served, served.model)
        self.target.start()
        deadline = Deadline(self.clock, timeout_s, f"start the serving runtime at {self.target.endpoint}")
        self.close()  # a fresh channel: the old one may be in backoff after the runtime died
        while not self.client.ready(min(1.0, max(deadline.remaining(), 0.05))):
            if not self.target.running():
                raise RolloutError(f"the serving runtime exited during start-up; last log lines:\n"
                                   f"{self.target.logs(20)}")
            deadline.check()

    def stop(self) -> None:
        self.close()
        self.target.stop()

    def states(self, model: str, timeout_s: float) -> dict[int, tuple[str, str]]:
        """{version: (state name, error message)}; {} when the runtime does not know the model."""
        try:
            rows = self.client.status(model, deadline=timeout_s)
        except ModelNotFoundError:
            return {}
        except ClientError as err:
            raise RolloutError(f"status of {model} on {self.target.endpoint} failed: {_why(err)}") from None
        return {v: (row["state"], row["error_message"]) for v, row in rows.items()}

    def logs(self, tail: int) -> str:
        return self.target.logs(tail)

    # ------------------------------------------------------------- files
    def has_version(self, model: str, version: int) -> bool:
        if self.passthrough:  # the server reads the store itself
            return True
        return version in self.target.versions(model)

    def versions_on_host(self, model: str) -> list[int]:
        if self.passthrough and self.store_versions is not None:  # the runtime reads the store itself
            return sorted(set(self.target.versions(model)) | set(self.store_versions(model)))
        return self.target.versions(model)

    def deliver(self, model: str, version: int) -> None:
        if self.passthrough:
            return
        if self.fetch is None:
            raise RolloutError(f"{model} version {version} is not on the serving host and no store is "
                               "reachable to deliver it")
        tmp = Path(tempfile.mkdtemp(prefix="tfrollout-deliver-"))
        try:
            source = self.fetch(model, version, tmp / str(version))
            self.target.deliver(model, version, source)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------- lock
    def lock(self, owner: str) -> None:
        self.target.lock(owner, self.lock_stale_s)

    def unlock(self) -> None:
        self.target.unlock()
