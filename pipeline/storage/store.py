"""`Store`: the byte-level primitives plus the version-level readers callers use.

The readers (`scan.list_versions`, `pull.pull_version`) are written against
`base.ObjectStore`; this class joins them, so `base` never imports what is built on it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.storage.base import ObjectStore, OnBytes, VersionInfo
from pipeline.storage.pull import pull_version
from pipeline.storage.scan import list_versions


class Store(ObjectStore):
    """A store root with its versions: what every backend (`local`, `s3`) is."""

    def list_versions(self, model: str | None = None, version: int | None = None) -> list[VersionInfo]:
        """Every version under the store (or one model, or one version of it), committed or not, sorted."""
        return list_versions(self, model, version)

    def committed_versions(self, model: str) -> list[VersionInfo]:
        """Only what readers may use: versions whose manifest and files all check out."""
        return [v for v in self.list_versions(model) if v.committed]

    def pull(self, model: str, version: int | None, dest: Path, on_bytes: OnBytes | None = None,
             info: VersionInfo | None = None) -> Path:
        """Download a committed version to `dest`, verifying every sha256 (see `pull.py`)."""
        return pull_version(self, model, version, dest, on_bytes=on_bytes, info=info)
