"""Garbage collection: keep the newest N committed versions, drop stale leftovers.

`select_gc` is pure. Deleting a committed version removes its manifest first, so a
reader never sees a "committed" version with files missing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from pipeline.storage.base import Store, VersionInfo
from pipeline.storage.lock import DEFAULT_LOCK_STALE_S, live_locks
from pipeline.storage.manifest import MANIFEST_NAME


@dataclass
class GcPlan:
    """Versions to delete and why; everything else is kept."""

    old: list[VersionInfo] = field(default_factory=list)  # committed, beyond --keep
    stale: list[VersionInfo] = field(default_factory=list)  # uncommitted, older than the grace period
    kept: list[VersionInfo] = field(default_factory=list)
    busy: list[VersionInfo] = field(default_factory=list)  # a push holds its lock: never touched

    def to_json(self) -> dict[str, object]:
        ids = lambda vs: [f"{v.model}/{v.version}" for v in sorted(vs, key=lambda v: (v.model, v.version))]  # noqa: E731
        return {"deleted_committed": ids(self.old), "deleted_stale": ids(self.stale), "kept": ids(self.kept),
                "pushing": ids(self.busy), "bytes_freed": sum(v.bytes for v in self.old + self.stale)}


def select_gc(versions: list[VersionInfo], *, keep: int, grace_s: float, now: float,
              pushing: Collection[tuple[str, int]] = ()) -> GcPlan:
    """Per model keep the `keep` highest committed versions; uncommitted ones past the grace go.

    Versions in `pushing` (a live push lock) are left alone whatever their age: a long
    upload of one big file shows no new objects for a long time.
    """
    plan = GcPlan()
    models = sorted({v.model for v in versions})
    for model in models:
        mine = [v for v in versions if v.model == model]
        plan.busy += [v for v in mine if (v.model, v.version) in pushing]
        mine = [v for v in mine if (v.model, v.version) not in pushing]
        committed = sorted((v for v in mine if v.committed), key=lambda v: v.version, reverse=True)
        plan.kept += committed[:keep]
        plan.old += committed[keep:]
        for v in mine:
            if not v.committed:
                (plan.stale if now - v.last_modified > grace_s else plan.kept).append(v)
    return plan


def run_gc(store: Store, plan: GcPlan) -> None:
    """Delete what `plan` selected: manifest first, then the rest of the version."""
    for info in plan.old + plan.stale:
        prefix = f"{info.model}/{info.version}/"
        store.delete([prefix + MANIFEST_NAME])
        store.delete(sorted(store.list_objects(prefix)))


def collect_garbage(store: Store, *, keep: int, grace_s: float, now: float, dry_run: bool = False,
                    lock_stale_s: float = DEFAULT_LOCK_STALE_S) -> dict[str, object]:
    """Plan, then (unless `dry_run`) delete; also drops abandoned multipart uploads / temp files.

    Versions with a live push lock, and their multipart uploads, are not touched.
    """
    pushing = live_locks(store, stale_after_s=lock_stale_s, now=now)
    plan = select_gc(store.list_versions(), keep=keep, grace_s=grace_s, now=now, pushing=pushing)
    report = plan.to_json()
    report["dry_run"] = dry_run
    if not dry_run:
        run_gc(store, plan)
        report["aborted_uploads"] = store.abort_stale_uploads(
            now - grace_s, keep_prefixes=[f"{model}/{version}/" for model, version in pushing])
    return report
