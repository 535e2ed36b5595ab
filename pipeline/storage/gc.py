"""Garbage collection: keep the newest N committed versions, drop stale leftovers.

`select_gc` is pure. Deleting a committed version removes its manifest first, so a
reader never sees a "committed" version with files missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.storage.base import Store, VersionInfo
from pipeline.storage.manifest import MANIFEST_NAME


@dataclass
class GcPlan:
    """Versions to delete and why; everything else is kept."""

    old: list[VersionInfo] = field(default_factory=list)  # committed, beyond --keep
    stale: list[VersionInfo] = field(default_factory=list)  # uncommitted, older than the grace period
    kept: list[VersionInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        ids = lambda vs: [f"{v.model}/{v.version}" for v in sorted(vs, key=lambda v: (v.model, v.version))]  # noqa: E731
        return {"deleted_committed": ids(self.old), "deleted_stale": ids(self.stale), "kept": ids(self.kept),
                "bytes_freed": sum(v.bytes for v in self.old + self.stale)}


def select_gc(versions: list[VersionInfo], *, keep: int, grace_s: float, now: float) -> GcPlan:
    """Per model keep the `keep` highest committed versions; uncommitted ones past the grace go."""
    plan = GcPlan()
    models = sorted({v.model for v in versions})
    for model in models:
        mine = [v for v in versions if v.model == model]
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
        store.delete(sorted(store.list(prefix)))


def collect_garbage(store: Store, *, keep: int, grace_s: float, now: float,
                    dry_run: bool = False) -> dict[str, object]:
    """Plan, then (unless `dry_run`) delete; also drops abandoned multipart uploads / temp files."""
    plan = select_gc(store.list_versions(), keep=keep, grace_s=grace_s, now=now)
    report = plan.to_json()
    report["dry_run"] = dry_run
    if not dry_run:
        run_gc(store, plan)
        report["aborted_uploads"] = store.abort_stale_uploads(now - grace_s)
    return report
