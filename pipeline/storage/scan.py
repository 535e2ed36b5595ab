"""Group a store listing into versions and decide which ones are committed.

`group_versions` is pure (listing in, groups out); `list_versions` adds the one
read per version that fetches its manifest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from pipeline.errors import StorageError
from pipeline.storage.base import ObjectInfo, ObjectStore, VersionInfo
from pipeline.storage.manifest import (
    MANIFEST_NAME,
    VersionManifest,
    changed_since_commit,
    check_listing,
)

MANIFEST_READERS = 8


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


def read_manifest(store: ObjectStore, model: str, version: int) -> tuple[VersionManifest | None, list[str]]:
    """Fetch and parse a version's manifest; an unreadable one is a problem, not a crash."""
    key = f"{model}/{version}/{MANIFEST_NAME}"
    try:
        return VersionManifest.loads(store.get_bytes(key), where=store.location.join(key)), []
    except StorageError as exc:
        if "unreadable store manifest" in str(exc):
            return None, [str(exc)]
        raise


def list_versions(store: ObjectStore, model: str | None = None, version: int | None = None) -> list[VersionInfo]:
    """One listing (narrowed to the model or version when given), then the manifests, read concurrently:
    on S3 each is a round trip, and a model with many versions would otherwise pay them in series."""
    if version is not None and model is None:
        raise ValueError("a version needs its model")
    prefix = f"{model}/{version}/" if version is not None else f"{model}/" if model else ""
    groups = sorted(group_versions(store.list_objects(prefix)).items())
    with_manifest = [key for key, files in groups if MANIFEST_NAME in files]
    manifests: dict[tuple[str, int], tuple[VersionManifest | None, list[str]]] = {}
    if with_manifest:
        listed = dict(groups)
        with ThreadPoolExecutor(max_workers=min(MANIFEST_READERS, len(with_manifest))) as pool:
            manifests = dict(zip(with_manifest, pool.map(lambda k: read_manifest(store, *k), with_manifest),
                                 strict=True))
            for key, (manifest, problems) in manifests.items():
                if manifest is not None:
                    problems += rewritten(store, pool, key, listed[key], manifest)
    return [judge(name, ver, files, *manifests.get((name, ver), (None, [])),
                  store.location.join(name, str(ver)) + "/") for (name, ver), files in groups]


def rewritten(store: ObjectStore, pool: ThreadPoolExecutor, key: tuple[str, int], files: Mapping[str, ObjectInfo],
              manifest: VersionManifest) -> list[str]:
    """Problems for files rewritten since the commit: a file whose listed token changed is
    checked against the manifest's sha256 (S3: the sha256 recorded with the object; a
    file: its bytes), so a same-size tampered file uncommits its version while a copy
    that kept the bytes does not. Nothing is read for unchanged files."""
    suspects = changed_since_commit(manifest, {path: obj.token for path, obj in files.items()})
    if not suspects:
        return []
    prefix = f"{key[0]}/{key[1]}/"
    expected = manifest.by_path()
    found = list(pool.map(lambda path: store.sha256_of(prefix + path), suspects))
    return [f"{path}: rewritten since the commit and its sha256 "
            f"{'is not recorded' if sha is None else 'differs'}"
            for path, sha in zip(suspects, found, strict=True) if sha != expected[path].sha256]
