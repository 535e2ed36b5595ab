"""The model manager: which versions of which models are loaded, in what state.

It reconciles the configured model set with the version directories on disk
(policy decisions come from `policy`), loads new versions before unloading old
ones, keeps a failed version's error for GetModelStatus without touching the
other versions, and resolves a request's (name, version | label) to a Servable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tensorflow.python.profiler.trace import Trace

from .errors import ServingError, from_tf_error, invalid_argument, not_found
from .policy import (
    State,
    VersionPolicy,
    check_labels,
    index_version_dirs,
    pick_latest,
    plan_loads,
    plan_unloads,
    resolve_label,
    select_versions,
)
from .servable import Servable

log = logging.getLogger("modelserver.manager")

Loader = Callable[[str, int, Path], Servable]


@dataclass
class VersionRecord:
    version: int
    state: State = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    failures: int = 0
    dir_mtime: float = 0.0
    failed_at: float = 0.0  # monotonic time of the last failed load


@dataclass
class ModelRecord:
    name: str
    base_path: str
    policy: VersionPolicy
    labels: dict[str, int] = field(default_factory=dict)
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    retired: bool = False  # removed from the config: everything unloads
    dirs: dict[int, str] = field(default_factory=dict)  # version → its directory name
    reported: set[str] = field(default_factory=set)  # names already logged as not versions

    def states(self) -> dict[int, State]:
        return {v: r.state for v, r in self.versions.items()}


def _local_path(base_path: str) -> str:
    return base_path[len("file://"):] if base_path.startswith("file://") else base_path


class ModelManager:
    """Thread-safe registry of model versions; one reconcile runs at a time."""

    def __init__(self, loader: Loader, *, allow_unavailable_labels: bool = False,
                 max_load_retries: int = 5, retry_interval_s: float = 0.0,
                 load_threads: int = 0, unload_threads: int = 0):
        self._loader = loader
        self._retry_interval_s = retry_interval_s  # --load_retry_interval_micros
        # --num_load_threads / --num_unload_threads: 0 runs them one at a time
        self._load_pool = ThreadPoolExecutor(load_threads, "load") if load_threads > 0 else None
        self._unload_pool = ThreadPoolExecutor(unload_threads, "unload") if unload_threads > 0 else None
        self._allow_unavailable_labels = allow_unavailable_labels
        self._max_load_retries = max_load_retries
        self._models: dict[str, ModelRecord] = {}
        self._lock = threading.RLock()
        self._reconcile_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ config

    def apply_config(self, config) -> None:
        """Replace the whole model set with a ModelServerConfig's model_config_list.

        Blocks until new versions finished loading (or failed), then applies
        version labels, as TF Serving's ReloadConfig does. Raises ServingError
        for an invalid config or labels naming unavailable versions.
        """
        which = config.WhichOneof("config")
        if which == "custom_model_config":
            raise invalid_argument("custom_model_config is not supported; use model_config_list")
        entries = list(config.model_config_list.config)
        names = [c.name for c in entries]
        if len(set(names)) != len(names):
            raise invalid_argument(f"Illegal to list model {_first_dup(names)} multiple times in config list")
        for c in entries:
            if not c.name:
                raise invalid_argument("ModelConfig must have a name")
            if not c.base_path:
                raise invalid_argument(f"ModelConfig for model {c.name} has an empty base_path")
            if c.model_platform not in ("", "tensorflow"):
                raise invalid_argument(f"Unsupported model platform {c.model_platform} for model {c.name}")
        with self._reconcile_lock:
            with self._lock:
                wanted = {c.name for c in entries}
                for name, existing in self._models.items():
                    if name not in wanted:
                        existing.retired = True
                pending_labels = {}
                moved: list[tuple[ModelRecord, ModelRecord]] = []
                for c in entries:
                    policy = VersionPolicy.from_proto(c.model_version_policy)
                    rec = self._models.get(c.name)
                    if rec is None:
                        rec = self._models[c.name] = ModelRecord(c.name, c.base_path, policy)
                    elif rec.base_path != c.base_path:
                        # new base path: load it aside, the old record serves until the swap
                        moved.append((rec, ModelRecord(c.name, c.base_path, policy)))
                    rec.policy, rec.retired = policy, False
                    pending_labels[c.name] = dict(c.version_labels)
            for old, new in moved:
                self._reconcile(new)
                with self._lock:
                    self._models[new.name] = new
                for v, r in list(old.versions.items()):
                    if r.state == State.AVAILABLE:
                        self._unload(old, v)
            for rec in list(self._models.values()):
                self._reconcile(rec)
            errors = []
            with self._lock:
                for name, labels in pending_labels.items():
                    rec = self._models[name]
                    available = {v for v, s in rec.states().items() if s == State.AVAILABLE}
                    err = check_labels(name, labels, available, self._allow_unavailable_labels)
                    if err is None:
                        rec.labels = labels
                    else:
                        errors.append(err)
            if errors:
                raise errors[0]

    def unavailable_at_start(self, names: list[str]) -> tuple[list[tuple[str, int, ServingError]], float | None]:
        """TF Serving's start-up wait, over what the first config loaded: per model, the newest
        version that reached a final state decides (AVAILABLE, or failed for good). Returns
        (models whose deciding version failed with no retry left, seconds until a pending retry
        is due — None when none is pending). A model with no version yet decides nothing."""
        failed: list[tuple[str, int, ServingError]] = []
        wait: float | None = None
        now = time.monotonic()
        with self._lock:
            for name in names:
                rec = self._models.get(name)
                final = sorted(((v, r) for v, r in (rec.versions.items() if rec else ())
                                if r.state == State.AVAILABLE or r.error is not None), reverse=True)
                if not final or final[0][1].state == State.AVAILABLE:
                    continue
                version, r = final[0]
                if r.failures <= self._max_load_retries:  # TF Serving retries the load before giving up
                    due = max(0.0, r.failed_at + self._retry_interval_s - now)
                    wait = due if wait is None else min(wait, due)
                elif r.error is not None:
                    failed.append((name, version, r.error))
        return failed, wait

    # ------------------------------------------------------------ polling

    def poll(self) -> None:
        """One pass over all models: pick up new/removed version directories. Traced (a
        TraceMe): a profile of the server shows its file-system polls beside the requests."""
        with Trace("FileSystemStoragePathSource::Poll"), self._reconcile_lock:
            for rec in list(self._models.values()):
                self._reconcile(rec)

    def start_polling(self, interval_seconds: float) -> None:
        """Poll every `interval_seconds` in a daemon thread (≤0: no polling)."""
        if interval_seconds <= 0:
            return

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll()
                except Exception:  # keep polling; a bad pass must not kill the thread
                    log.exception("file system poll failed")

        self._thread = threading.Thread(target=loop, name="fs-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def unload_all(self) -> None:
        """Shutdown: unload every version (closes batch schedulers after draining)."""
        with self._reconcile_lock:
            for rec in list(self._models.values()):
                for v, r in list(rec.versions.items()):
                    if r.state == State.AVAILABLE:
                        self._unload(rec, v)

    # ---------------------------------------------------------- reconcile

    def _versions_on_disk(self, rec: ModelRecord) -> dict[int, float]:
        base = _local_path(rec.base_path)
        try:
            names = os.listdir(base)
        except OSError:
            log.warning("No versions of servable %s found under base path %s", rec.name, base)
            return {}
        by_version, duplicates = index_version_dirs(names)
        for v, kept, ignored in duplicates:
            if ignored not in rec.reported:
                rec.reported.add(ignored)
                log.warning("Duplicate version directories detected. Version %d will be loaded "
                            "from %s, %s will be ignored.", v, kept, ignored)
        for name in set(names) - set(by_version.values()):
            if name not in rec.reported:
                rec.reported.add(name)
                log.info("Skipping %s under base path %s of servable %s: not a version number",
                         name, base, rec.name)
        out, dirs = {}, {}
        for v, name in by_version.items():
            p = os.path.join(base, name)
            if os.path.isdir(p):
                out[v], dirs[v] = os.stat(p).st_mtime, name
        rec.dirs = dirs
        return out

    def _reconcile(self, rec: ModelRecord) -> None:
        on_disk = {} if rec.retired else self._versions_on_disk(rec)
        desired = select_versions(rec.policy, on_disk)
        with self._lock:
            blocked = set()
            for v, r in rec.versions.items():
                if r.error is None:
                    continue
                if on_disk.get(v, r.dir_mtime) != r.dir_mtime:
                    r.failures, r.failed_at = 0, 0.0  # directory changed: try again now
                waiting = time.monotonic() - r.failed_at < self._retry_interval_s
                if r.failures > self._max_load_retries or (r.failures and waiting):
                    blocked.add(v)
            loads = plan_loads(desired, rec.states(), blocked)
        self._each(self._load_pool, lambda v: self._load(rec, v, on_disk.get(v, 0.0)), loads)
        with self._lock:
            unloads = plan_unloads(desired, rec.states())
        self._each(self._unload_pool, lambda v: self._unload(rec, v), unloads)

    @staticmethod
    def _each(pool: ThreadPoolExecutor | None, fn: Callable[[int], None], versions) -> None:
        """fn(v) for every version: on the pool when there is one, and wait for all."""
        if pool is None or len(versions) < 2:
            for v in versions:
                fn(v)
            return
        for future in [pool.submit(fn, v) for v in versions]:
            future.result()

    def _load(self, rec: ModelRecord, version: int, mtime: float) -> None:
        path = Path(_local_path(rec.base_path)) / rec.dirs.get(version, str(version))
        with self._lock:
            r = rec.versions.setdefault(version, VersionRecord(version))
            r.state, r.error, r.dir_mtime = State.LOADING, None, mtime
        log.info("Loading servable: {name: %s version: %d}", rec.name, version)
        try:
            servable = self._loader(rec.name, version, path)
        except Exception as exc:  # any load failure is reported, never raised
            err = exc if isinstance(exc, ServingError) else (
                from_tf_error(exc) if hasattr(exc, "error_code")
                else ServingError(grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}"))
            log.error("Loading servable: {name: %s version: %d} failed: %s", rec.name, version, err.message)
            with self._lock:
                r.state, r.error, r.failures = State.END, err, r.failures + 1
                r.failed_at = time.monotonic()
            return
        with self._lock:
            r.servable, r.state, r.failures = servable, State.AVAILABLE, 0
        log.info("Successfully loaded servable version {name: %s version: %d}", rec.name, version)

    def _unload(self, rec: ModelRecord, version: int) -> None:
        with self._lock:
            r = rec.versions[version]
            r.state = State.UNLOADING
            servable, r.servable = r.servable, None
        log.info("Unloading servable version {name: %s version: %d}", rec.name, version)
        if servable is not None:
            servable.close()  # in-flight requests keep their reference and finish
        with self._lock:
            r.state = State.END

    # ------------------------------------------------------------ lookups

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request, with TF Serving's NOT_FOUND / INVALID_ARGUMENT errors
        (ServerCore::ServableRequestFromModelSpec refuses an empty name first)."""
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._lock:
            rec = self._models.get(name)
            if label:
                version = resolve_label(name, rec.labels if rec else {}, label)
            if rec is None:
                raise not_found(_request_text(name, version))
            if version is None:
                version = pick_latest(rec.states())
                if version is None:
                    raise not_found(_request_text(name, None))
            r = rec.versions.get(version)
            if r is None or r.state != State.AVAILABLE or r.servable is None:
                raise not_found(_request_text(name, version))
            return r.servable

    def status(self, name: str, version: int | None = None) -> list[tuple[int, State, ServingError | None]]:
        """(version, state, error) rows for GetModelStatus (get_model_status_impl.cc): one
        version when asked for, else all, newest first (ServableStateMonitor's VersionMap
        is ordered by std::greater). A version label plays no part there."""
        with self._lock:
            rec = self._models.get(name)
            if version is not None:
                r = rec.versions.get(version) if rec else None
                if r is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [(version, r.state, r.error)]
            if rec is None or not rec.versions:
                raise not_found(f"Could not find any versions of model {name}")
            return [(v, r.state, r.error) for v, r in sorted(rec.versions.items(), reverse=True)]

    def snapshot(self) -> dict[str, dict[int, State]]:
        """Model → version → state (for metrics)."""
        with self._lock:
            return {n: rec.states() for n, rec in self._models.items()}

    def labels(self, name: str) -> dict[str, int]:
        with self._lock:
            rec = self._models.get(name)
            return dict(rec.labels) if rec else {}


def _request_text(name: str, version: int | None) -> str:
    req = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return f"Servable not found for request: {req}"


def _first_dup(names: list[str]) -> str:
    seen = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return ""
