"""The object-store interface: a handful of byte-level primitives every backend implements.

Higher-level operations (push, pull, list, gc) are written once against these
primitives, so the local `file://` store and S3 behave identically.
Keys are relative to the store root: `<model>/<version>/<path inside the version>`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import StorageError

if TYPE_CHECKING:
    from pipeline.storage.manifest import VersionManifest
    from pipeline.storage.uri import StoreURI

OnBytes = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: size, modification time (epoch seconds), sha256 when cheaply known,
    and the store's own token for this object's content (S3: the ETag; a file: its mtime
    and size), which the listing carries for free and any rewrite of the object changes."""

    key: str
    size: int
    mtime: float
    sha256: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class UploadItem:
    """A local file to store under `key`; its sha256 is recorded with the object."""

    local: Path
    key: str
    size: int
    sha256: str


@dataclass
class VersionInfo:
    """One `<model>/<version>` found in the store, committed or not."""

    model: str
    version: int
    committed: bool
    files: int
    bytes: int
    last_modified: float
    uri: str
    manifest: VersionManifest | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "version": self.version, "committed": self.committed,
                               "files": self.files, "bytes": self.bytes,
                               "last_modified": self.last_modified, "uri": self.uri,
                               "problems": self.problems}
        if self.manifest is not None:
            out["committed_at"] = self.manifest.committed_at
            out["export"] = {k: self.manifest.export.get(k) for k in
                             ("signature", "metrics", "exported_at", "quality_gate", "preprocess")
                             if k in self.manifest.export}
        return out


class ObjectStore(ABC):
    """Byte-level access to one store root (a local directory or an S3 bucket prefix).

    The version-level readers (`list_versions`, `pull`) are added by `store.Store`,
    which every backend subclasses; `scan` and `pull` are written against this class.
    """

    location: StoreURI

    @property
    def uri(self) -> str:
        return self.location.join()

    # ---------------------------------------------------------------- primitives
    @abstractmethod
    def ensure_ready(self, *, create: bool) -> None:
        """Check the store is reachable and exists; create it when `create` (bucket/dir)."""

    @abstractmethod
    def list_objects(self, prefix: str = "") -> dict[str, ObjectInfo]:
        """All objects whose key starts with `prefix`, recursively, keyed by key."""

    def list_for_write(self, prefix: str, *, create: bool) -> dict[str, ObjectInfo]:
        """`list_objects(prefix)` for a writer: the store must exist (created when `create`).

        Backends override this to learn both in one round trip.
        """
        self.ensure_ready(create=create)
        return self.list_objects(prefix)

    @abstractmethod
    def sha256_of(self, key: str) -> str | None:
        """The sha256 recorded for (or computed from) an object; None if unknown/missing."""

    @abstractmethod
    def upload(self, batches: Sequence[Sequence[UploadItem]], on_bytes: OnBytes) -> None:
        """Store the files batch after batch; each file appears only when complete.

        Every file of a batch is stored before the next batch starts (the graph goes after
        its variables); within a batch files go concurrently where the backend can.
        """

    @abstractmethod
    def download(self, items: Sequence[tuple[str, Path]], on_bytes: OnBytes) -> None:
        """Copy objects to local files (`(key, dest)` pairs), concurrently where the backend can."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically (manifests)."""

    def get_bytes(self, key: str) -> bytes:
        """Read a small object (manifests)."""
        found = self.read_versioned(key)
        if found is None:
            raise StorageError(f"{self.location.join(key)} not found")
        return found[0]

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove objects; missing keys are not an error."""

    # Conditional writes (the push lock). A token identifies one written state of an object.
    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Write a small object only if `key` does not exist: its token, or None if it existed."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """A small object and its token; None if missing."""

    @abstractmethod
    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        """Overwrite `key` only if it still holds the state `token`: the new token, or None."""

    def abort_stale_uploads(self, older_than: float, keep_prefixes: Sequence[str] = ()) -> int:
        """Drop unfinished multipart uploads started before `older_than`, except under `keep_prefixes`
        (keys relative to the store root) (S3 only)."""
        return 0
