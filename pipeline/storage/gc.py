"""Garbage collection: keep the newest N committed versions, drop stale leftovers.

`select_gc` is pure. Deleting a committed version removes its manifest first, so a
reader never sees a "committed" version with files missing. Versions a serving
runtime loads or labels, and the one `rollback` would return to, are `protected`
(the caller asks the runtime: `pipeline.rollout.served`) and never deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from pipeline.storage.base import VersionInfo
from pipeline.storage.lock import DEFAULT_LOCK_STALE_S, live_locks
from pipeline.storage.manifest import MANIFEST_NAME
from pipeline.storage.reserve import (
    DEFAULT_RESERVATION_STALE_S,
    collectable,
    reservation_key,
    reservations,
)
from pipeline.storage.store import Store


def _ids(versions: list[VersionInfo]) -> list[str]:
    return [f"{v.model}/{v.version}" for v in sorted(versions, key=lambda v: (v.model, v.version))]


@dataclass
class GcPlan:
    """Versions to delete and why; everything else is kept."""

    old: list[VersionInfo] = field(default_factory=list)  # committed, beyond --keep
    stale: list[VersionInfo] = field(default_factory=list)  # uncommitted, older than the grace period
    kept: list[VersionInfo] = field(default_factory=list)
    busy: list[VersionInfo] = field(default_factory=list)  # a push holds its lock: never touched
    served: list[VersionInfo] = field(default_factory=list)  # a runtime needs it: never touched
    reasons: dict[str, str] = field(default_factory=dict)  # "model/version" -> why it is protected

    def to_json(self) -> dict[str, object]:
        return {"deleted_committed": _ids(self.old), "deleted_stale": _ids(self.stale), "kept": _ids(self.kept),
                "pushing": _ids(self.busy), "served": _ids(self.served),
                "served_reasons": {k: self.reasons[k] for k in _ids(self.served) if k in self.reasons},
                "bytes_freed": sum(v.bytes for v in self.old + self.stale)}


def select_gc(versions: list[VersionInfo], *, keep: int, grace_s: float, now: float,
              pushing: Collection[tuple[str, int]] = (),
              protected: Mapping[tuple[str, int], str] | Collection[tuple[str, int]] = ()) -> GcPlan:
    """Per model keep the `keep` highest committed versions; uncommitted ones past the grace go.

    Versions in `pushing` (a live push lock) are left alone whatever their age: a long
    upload of one big file shows no new objects for a long time. Versions in `protected`
    (loaded or labelled by a runtime, or its rollback target; a mapping gives the reason)
    are never deleted; `keep` still means the newest N, served or not.
    """
    plan = GcPlan()
    shield = set(protected)
    if isinstance(protected, Mapping):
        plan.reasons = {f"{m}/{n}": why for (m, n), why in protected.items()}
    for model in sorted({v.model for v in versions}):
        mine = [v for v in versions if v.model == model]
        plan.busy += [v for v in mine if (v.model, v.version) in pushing]
        mine = [v for v in mine if (v.model, v.version) not in pushing]
        plan.served += [v for v in mine if (v.model, v.version) in shield]
        committed = sorted((v for v in mine if v.committed), key=lambda v: v.version, reverse=True)
        newest = committed[:keep]
        plan.kept += [v for v in newest if (v.model, v.version) not in shield]
        plan.old += [v for v in committed[keep:] if (v.model, v.version) not in shield]
        for v in mine:
            if not v.committed and (v.model, v.version) not in shield:
                (plan.stale if now - v.last_modified > grace_s else plan.kept).append(v)
    return plan


def run_gc(store: Store, plan: GcPlan) -> None:
    """Delete what `plan` selected: manifest first, then the rest of the version."""
    for info in plan.old + plan.stale:
        prefix = f"{info.model}/{info.version}/"
        store.delete([prefix + MANIFEST_NAME])
        store.delete(sorted(store.list_objects(prefix)))


def collect_garbage(store: Store, *, keep: int, grace_s: float, now: float, dry_run: bool = False,
                    lock_stale_s: float = DEFAULT_LOCK_STALE_S,
                    protected: Mapping[tuple[str, int], str] | None = None,
                    versions: list[VersionInfo] | None = None,
                    reservation_stale_s: float = DEFAULT_RESERVATION_STALE_S) -> dict[str, object]:
    """Plan, then (unless `dry_run`) delete; also drops abandoned multipart uploads / temp files
    and version reservations that went stale or whose version is committed.

    Versions with a live push lock, and their multipart uploads, are not touched; nor are
    `protected` ones. `versions`: the store's listing when the caller already has it.
    """
    pushing = live_locks(store, stale_after_s=lock_stale_s, now=now)
    listing = store.list_versions() if versions is None else versions
    plan = select_gc(listing, keep=keep, grace_s=grace_s, now=now, pushing=pushing, protected=protected or {})
    committed = {(v.model, v.version) for v in listing if v.committed}
    reserved = collectable(reservations(store), committed, now=now, stale_after_s=reservation_stale_s)
    reserved = [k for k in reserved if k not in pushing]
    report = plan.to_json()
    report["deleted_reservations"] = [f"{m}/{n}" for m, n in reserved]
    report["dry_run"] = dry_run
    if not dry_run:
        run_gc(store, plan)
        store.delete([reservation_key(m, n) for m, n in reserved])
        report["aborted_uploads"] = store.abort_stale_uploads(
            now - grace_s, keep_prefixes=[f"{model}/{version}/" for model, version in pushing])
    return report
