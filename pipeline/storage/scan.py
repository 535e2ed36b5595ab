"""Group a store listing into versions and decide which ones are committed.

`group_versions` is pure (listing in, groups out); `list_versions` adds the one
read per version that fetches its manifest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from pipeline.errors import StorageError
from pipeline.storage.base import ObjectInfo, Store, VersionInfo
from pipeline.storage.manifest import MANIFEST_NAME, VersionManifest, check_listing


def split_key(key: str) -> tuple[str, int, str] | None:
    """`model/3/variables/x` -> ("model", 3, "variables/x"); None for keys outside the layout."""
    parts = key.split("/", 2)
    if len(parts) < 3 or not parts[0] or parts[0].startswith(".") or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def group_versions(objects: Mapping[str, ObjectInfo]) -> dict[tuple[str, int], dict[str, ObjectInfo]]:
    """{(model, version): {relative path: object}} for every key in the layout (pure)."""
    groups: dict[tuple[str, int], dict[str, ObjectInfo]] = defaultdict(dict)
    for key, info in objects.items():
        parsed = split_key(key)
        if parsed is not None:
            model, version, rel = parsed
            groups[(model, version)][rel] = info
    return dict(groups)


def judge(model: str, version: int, files: Mapping[str, ObjectInfo],
          manifest: VersionManifest | None, problems: list[str], uri: str) -> VersionInfo:
    """Committed iff the manifest exists, names this version, and every listed file is there (pure)."""
    problems = list(problems)
    if manifest is None and not problems:
        problems.append("no manifest (upload unfinished or interrupted)")
    if manifest is not None:
        if (manifest.model_name, manifest.version) != (model, version):
            problems.append(f"manifest names {manifest.model_name}/{manifest.version}")
        problems += check_listing(manifest, {k: v.size for k, v in files.items()})
    data = {k: v for k, v in files.items() if k != MANIFEST_NAME}
    return VersionInfo(model=model, version=version, committed=manifest is not None and not problems,
                       files=len(data), bytes=sum(v.size for v in data.values()),
                       last_modified=max((v.mtime for v in files.values()), default=0.0),
                       uri=uri, manifest=manifest, problems=problems)


def read_manifest(store: Store, model: str, version: int) -> tuple[VersionManifest | None, list[str]]:
    """Fetch and parse a version's manifest; an unreadable one is a problem, not a crash."""
    key = f"{model}/{version}/{MANIFEST_NAME}"
    try:
        return VersionManifest.loads(store.get_bytes(key), where=store.location.join(key)), []
    except StorageError as exc:
        if "unreadable store manifest" in str(exc):
            return None, [str(exc)]
        raise


def list_versions(store: Store, model: str | None = None) -> list[VersionInfo]:
    objects = store.list(f"{model}/" if model else "")
    out = []
    for (name, version), files in sorted(group_versions(objects).items()):
        manifest, problems = (read_manifest(store, name, version) if MANIFEST_NAME in files
                              else (None, []))
        out.append(judge(name, version, files, manifest, problems,
                         store.location.join(name, str(version)) + "/"))
    return out
