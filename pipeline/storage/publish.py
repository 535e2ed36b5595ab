"""Push a local version directory to a store: resumable, immutable once committed.

`plan_push` is the pure core (what to upload, skip, delete, or refuse);
`push_version` runs a plan: uncommit if needed → variables and other files →
`saved_model.pb` → remove extraneous leftovers → manifest (the commit).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import StorageConfig
from pipeline.errors import StorageError
from pipeline.results import PushOutput
from pipeline.storage.base import ObjectInfo, OnBytes, UploadItem
from pipeline.storage.errors import MissingBucketError
from pipeline.storage.lock import DEFAULT_LOCK_STALE_S, Lease, take_lease
from pipeline.storage.manifest import (
    MANIFEST_NAME,
    FileEntry,
    VersionManifest,
    build_manifest,
    check_listing,
    stamp,
    upload_order,
)
from pipeline.storage.reserve import (
    DEFAULT_RESERVATION_STALE_S,
    claim_for_push,
    drop_own_reservation,
)
from pipeline.storage.reserve import release_quietly as release_reservation
from pipeline.storage.scan import read_manifest
from pipeline.storage.store import Store


@dataclass
class PushPlan:
    """What a push will do. `first`/`last` are upload batches in order."""

    first: list[FileEntry] = field(default_factory=list)
    last: list[FileEntry] = field(default_factory=list)
    skip: list[FileEntry] = field(default_factory=list)
    extraneous: list[str] = field(default_factory=list)
    uncommit: bool = False  # delete the old manifest before touching any file
    already_committed: bool = False

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.first + self.last)


def plan_push(local: VersionManifest, remote: Mapping[str, ObjectInfo],
              remote_sha: Mapping[str, str | None], existing: VersionManifest | None,
              *, force: bool) -> PushPlan:
    """Decide the push (pure).

    remote: objects under the version prefix keyed by relative path; remote_sha: the
    recorded sha256 of remote files whose size matches the local one; existing: the
    version's current manifest, if any.
    """
    sizes = {k: v.size for k, v in remote.items()}
    committed = existing is not None and not check_listing(existing, sizes)
    if committed and existing is not None:
        if existing.same_content(local):
            return PushPlan(skip=list(local.files), already_committed=True)
        if not force:
            old, new = existing.by_path(), local.by_path()
            differ = sum(1 for p in set(old) | set(new) if old.get(p) != new.get(p))
            raise StorageError(
                f"{local.model_name} version {local.version} is taken: already committed with different "
                f"content ({differ} files differ) and a committed version is never overwritten; export "
                f"again and the export picks a fresh version number")
    plan = PushPlan(uncommit=MANIFEST_NAME in remote)
    todo = []
    for entry in local.files:
        obj = remote.get(entry.path)
        if obj is not None and obj.size == entry.size and remote_sha.get(entry.path) == entry.sha256:
            plan.skip.append(entry)
        else:
            todo.append(entry)
    first, last = upload_order(e.path for e in todo)
    by_path = local.by_path()
    plan.first = [by_path[p] for p in first]
    plan.last = [by_path[p] for p in last]
    wanted = set(by_path) | {MANIFEST_NAME}
    plan.extraneous = sorted(k for k in remote if k not in wanted)
    return plan


def claim_identity(local: VersionManifest) -> str:
    """Whose reservation a push may use (pure): the export run's id from `tfrollout.json`, else (a
    directory not made by the export stage) its content, so a resumed push of it is still its own."""
    run_id = local.export.get("run_id")
    if run_id is not None:
        return str(run_id)
    digest = hashlib.sha256(json.dumps(sorted((f.path, f.size, f.sha256) for f in local.files)).encode())
    return f"content-{digest.hexdigest()[:16]}"


ProgressFactory = Callable[[int], Any]  # total bytes -> context manager yielding advance(n)


def open_and_hash(config: StorageConfig, version_dir: Path, model_name: str,
                  version: int) -> tuple[Store, VersionManifest]:
    """Open the store while the files are hashed on another thread.

    hashlib releases the GIL, so hashing a large version costs no wall time while
    boto3 imports and builds its client (≈0.2 s): the fixed cost of a short CLI push.
    """
    from pipeline.startup import resume_collector
    from pipeline.storage import open_store

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") as pool:
        hashing = pool.submit(build_manifest, version_dir, model_name, version)
        try:
            store = open_store(config)
        except BaseException:
            hashing.cancel()
            raise
        finally:
            resume_collector()  # the CLI's start-up ends here: the upload is the real work
        return store, hashing.result()


def push_version(store: Store, version_dir: Path, model_name: str, version: int, *,
                 force: bool = False, create: bool = False,
                 progress: ProgressFactory | None = None,
                 on_bytes: OnBytes | None = None,
                 local: VersionManifest | None = None,
                 lock_stale_s: float | None = DEFAULT_LOCK_STALE_S,
                 reservation_stale_s: float | None = DEFAULT_RESERVATION_STALE_S) -> PushOutput:
    """Publish `version_dir` as `<model>/<version>/` and commit it with the manifest.

    `local` is the directory's manifest when the caller already hashed it (see
    `open_and_hash`); otherwise the files are hashed here. The version's push lock is
    held from before the listing to after the commit (`lock_stale_s=None`: no lock).
    Before uploading, the push claims the version number (`pipeline.storage.reserve`:
    the export's reservation, recognised by the run id in `tfrollout.json`, or a new
    one); the commit gives the reservation up (`reservation_stale_s=None`: no claim).
    """
    t0 = time.perf_counter()
    if local is None:
        local = build_manifest(version_dir, model_name, version)
    lease = None
    if lock_stale_s is not None:
        try:
            lease = take_lease(store, model_name, version, stale_after_s=lock_stale_s)
        except MissingBucketError:
            if not create:
                raise
            store.ensure_ready(create=True)
            lease = take_lease(store, model_name, version, stale_after_s=lock_stale_s)
    try:
        listing = store.list_for_write(f"{model_name}/{version}/", create=create)
        return _push_listed(store, version_dir, local, listing, t0, force=force, progress=progress,
                            on_bytes=on_bytes, lease=lease, reservation_stale_s=reservation_stale_s)
    finally:
        if lease is not None:
            lease.release()


def push_configured(store: Store, cfg: StorageConfig, version_dir: Path, model_name: str, version: int, *,
                    local: VersionManifest | None = None,
                    progress: ProgressFactory | None = None) -> PushOutput:
    """`push_version` with force, bucket creation and the push lock as `storage.*` says
    (a `file://` store is always created: it is just a directory)."""
    return push_version(store, version_dir, model_name, version, force=cfg.force,
                        create=cfg.create_bucket or store.location.scheme == "file", progress=progress,
                        local=local, lock_stale_s=cfg.lock_stale_s if cfg.push_lock else None,
                        reservation_stale_s=cfg.reservation_stale_s if cfg.push_lock else None)


def _push_listed(store: Store, version_dir: Path, local: VersionManifest, listing: Mapping[str, ObjectInfo],
                 t0: float, *, force: bool, progress: ProgressFactory | None,
                 on_bytes: OnBytes | None, lease: Lease | None = None,
                 reservation_stale_s: float | None = None) -> PushOutput:
    """Plan against the version's current objects, upload, and commit.

    With a `lease`, the upload stops as soon as a renewal finds the lock taken over, and
    the commit happens only if the lock is still ours.
    """
    model_name, version = local.model_name, local.version
    prefix = f"{model_name}/{version}/"
    remote = {k[len(prefix):]: v for k, v in listing.items()}
    existing = read_manifest(store, model_name, version)[0] if MANIFEST_NAME in remote else None
    local_by_path = local.by_path()
    remote_sha = {}
    for rel, obj in remote.items():
        entry = local_by_path.get(rel)
        if entry is not None and obj.size == entry.size:
            remote_sha[rel] = obj.sha256 or store.sha256_of(prefix + rel)
    plan = plan_push(local, remote, remote_sha, existing, force=force)
    run_id = claim_identity(local)
    claim = None
    if reservation_stale_s is not None and not plan.already_committed:
        claim = claim_for_push(store, model_name, version, run_id=run_id, stale_after_s=reservation_stale_s)

    sent = [0]
    lock = threading.Lock()  # S3 reports progress from several transfer threads

    def advance_factory(advance: Callable[[int], None]) -> OnBytes:
        def cb(n: int) -> None:
            if lease is not None and lease.lost:
                lease.check_held()  # raises: another push owns the version now
            with lock:
                sent[0] += n
            advance(n)
            if on_bytes is not None:
                on_bytes(n)
        return cb

    if not plan.already_committed:
        if plan.uncommit:
            store.delete([prefix + MANIFEST_NAME])
        total = plan.upload_bytes
        ctx = progress(total) if progress is not None else _NoProgress()
        try:
            with ctx as advance:
                cb = advance_factory(advance)
                store.upload([[UploadItem(version_dir / e.path, prefix + e.path, e.size, e.sha256)
                               for e in batch] for batch in (plan.first, plan.last) if batch], cb)
        except StorageError as exc:
            raise StorageError(
                f"push of {model_name} version {version} interrupted after {min(sent[0], total)} of "
                f"{total} bytes ({exc}); nothing was committed — re-run push to resume") from None
        if plan.extraneous:
            store.delete([prefix + k for k in plan.extraneous])
        if lease is not None:
            lease.check_held()
        local.tokens = committed_tokens(store.list_objects(prefix), prefix, local)
        store.put_bytes(prefix + MANIFEST_NAME, stamp(local).dumps())
    if claim is not None:  # committed: the manifest is the claim from now on
        release_reservation(store, model_name, version, claim)
    elif reservation_stale_s is not None:
        drop_own_reservation(store, model_name, version, run_id)
    duration = time.perf_counter() - t0
    return PushOutput(
        uri=store.location.join(model_name, str(version)) + "/",
        manifest_uri=store.location.join(prefix + MANIFEST_NAME),
        model_name=model_name, version=version, total_bytes=local.total_bytes,
        bytes_uploaded=sent[0],
        bytes_skipped=sum(e.size for e in plan.skip),
        files_uploaded=len(plan.first) + len(plan.last), files_skipped=len(plan.skip),
        files_deleted=len(plan.extraneous), already_committed=plan.already_committed,
        duration_s=round(duration, 3),
        throughput_mb_s=round(sent[0] / duration / 1e6 if duration > 0 else 0.0, 1))


def committed_tokens(listing: Mapping[str, ObjectInfo], prefix: str, manifest: VersionManifest) -> dict[str, str]:
    """The store tokens of the version's files as they are committed (one listing, no reads):
    later listings compare against them (scan.py)."""
    entries = manifest.by_path()
    out = {}
    for key, obj in listing.items():
        entry = entries.get(key[len(prefix):]) if key.startswith(prefix) else None
        if entry is not None and obj.token is not None and obj.size == entry.size:
            out[entry.path] = obj.token
    return out


class _NoProgress:
    def __enter__(self) -> Callable[[int], None]:
        return lambda n: None

    def __exit__(self, *exc: object) -> None:
        return None
