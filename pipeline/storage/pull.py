"""Download a committed version, verifying every sha256, with no partial result.

Files land in a hidden temp directory next to `dest`; only when every checksum
matches is it renamed to `dest`. Any failure removes the temp directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.storage.base import ObjectStore, OnBytes, VersionInfo
from pipeline.storage.manifest import MANIFEST_NAME, sha256_file
from pipeline.storage.scan import list_versions


def pick_version(versions: list[VersionInfo], model: str, version: int | None) -> VersionInfo:
    """The requested committed version, or the newest committed one (pure)."""
    committed = [v for v in versions if v.committed and v.model == model]
    if version is None:
        if not committed:
            raise StorageError(f"no committed version of model {model!r} in the store")
        return max(committed, key=lambda v: v.version)
    for info in versions:
        if info.model == model and info.version == version:
            if not info.committed:
                why = "; ".join(info.problems[:3]) or "not committed"
                raise StorageError(f"{model} version {version} is not committed ({why})")
            return info
    raise StorageError(f"{model} version {version} not found in the store")


def pull_version(store: ObjectStore, model: str, version: int | None, dest: Path, *,
                 on_bytes: OnBytes | None = None, info: VersionInfo | None = None) -> Path:
    """Fetch `<model>/<version>/` into `dest` (which must not exist); returns `dest`.

    `info`: the version as the caller already picked it (saves listing it again).
    """
    if info is None:
        info = pick_version(list_versions(store, model, version), model, version)
    assert info.manifest is not None
    dest = dest.resolve()
    if dest.exists():
        raise StorageError(f"destination {dest} already exists; remove it or pick another --dest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    prefix = f"{info.model}/{info.version}/"
    cb = on_bytes or (lambda n: None)
    try:
        for entry in info.manifest.files:
            (tmp / entry.path).parent.mkdir(parents=True, exist_ok=True)
        store.download([(prefix + e.path, tmp / e.path) for e in info.manifest.files], cb)
        for entry in info.manifest.files:
            got = sha256_file(tmp / entry.path)
            if got != entry.sha256:
                raise StorageError(f"checksum mismatch for {store.location.join(prefix + entry.path)}: "
                                   f"sha256 {got[:12]}… != manifest {entry.sha256[:12]}…; nothing was written")
        (tmp / MANIFEST_NAME).write_bytes(info.manifest.dumps())
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
