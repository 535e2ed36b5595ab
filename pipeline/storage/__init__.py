"""Model-version storage addressed by URI (`s3://bucket/prefix`, `file://path`).

Readers (ls, pull, rollout) use `open_store(config).committed_versions(model)` and
`.pull(model, version, dest)`: only versions whose manifest (the commit marker)
and files all check out are ever returned. Writers number versions through the store
(`reserve.py`: a conditional create per number) and hold a push lock (`lock.py`). This
package never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import StorageConfig
from pipeline.storage.base import ObjectInfo, UploadItem, VersionInfo
from pipeline.storage.manifest import MANIFEST_NAME, FileEntry, VersionManifest
from pipeline.storage.store import Store
from pipeline.storage.uri import StoreURI, parse_uri

__all__ = ["MANIFEST_NAME", "FileEntry", "ObjectInfo", "Store", "StoreURI", "UploadItem", "VersionInfo",
           "VersionManifest", "open_store", "parse_uri"]


def open_store(config: StorageConfig, cwd: Path | None = None) -> Store:
    """The backend for `config.uri` (boto3 is imported only for s3:// stores)."""
    location = parse_uri(config.uri, cwd)
    if location.scheme == "file":
        from pipeline.storage.local import LocalStore

        return LocalStore(location)
    from pipeline.storage.s3 import S3Store

    return S3Store(location, config)
