"""`file://` store: a local directory with exactly the S3 layout.

Every file is written to `<root>/.tmp/` first and renamed into place, so a file
never appears under its final name half-written (same guarantee S3 gives per object).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import StorageError
from pipeline.storage.base import ObjectInfo, OnBytes, UploadItem
from pipeline.storage.manifest import CHUNK, sha256_file
from pipeline.storage.store import Store
from pipeline.storage.uri import StoreURI

TMP_DIR = ".tmp"


def _token(data: bytes) -> str:
    """A local object's state token: its content hash (lock bodies carry a unique id)."""
    return hashlib.sha256(data).hexdigest()


class LocalStore(Store):
    """A directory tree rooted at `location.path`."""

    def __init__(self, location: StoreURI) -> None:
        assert location.path is not None
        self.location = location
        self.root = location.path

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return path

    def _tmp(self) -> Path:
        tmp = self.root / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / uuid.uuid4().hex

    def ensure_ready(self, *, create: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"store path {self.root} exists and is not a directory")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create store directory {self.root}: {exc.strerror}") from None

    def list_objects(self, prefix: str = "") -> dict[str, ObjectInfo]:
        out: dict[str, ObjectInfo] = {}
        if not self.root.is_dir():
            return out
        for dirpath, dirs, names in os.walk(self.root):
            if Path(dirpath) == self.root and TMP_DIR in dirs:
                dirs.remove(TMP_DIR)
            for name in names:
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    out[key] = ObjectInfo(key, st.st_size, st.st_mtime, token=f"{st.st_mtime_ns}-{st.st_size}")
        return out

    def sha256_of(self, key: str) -> str | None:
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None

    def _place(self, tmp: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def upload(self, batches: Sequence[Sequence[UploadItem]], on_bytes: OnBytes) -> None:
        for item in (item for batch in batches for item in batch):
            tmp = self._tmp()
            try:
                with item.local.open("rb") as src, tmp.open("wb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        on_bytes(len(chunk))
                self._place(tmp, item.key)
            except OSError as exc:
                raise StorageError(f"writing {self.location.join(item.key)} failed: {exc.strerror}") from None
            finally:
                tmp.unlink(missing_ok=True)

    def download(self, items: Sequence[tuple[str, Path]], on_bytes: OnBytes) -> None:
        for key, dest in items:  # a local disk gains nothing from parallel copies
            try:
                with self._path(key).open("rb") as fin, dest.open("wb") as fout:
                    while chunk := fin.read(CHUNK):
                        fout.write(chunk)
                        on_bytes(len(chunk))
            except FileNotFoundError:
                raise StorageError(f"{self.location.join(key)} disappeared during download") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        tmp = self._tmp()
        try:
            tmp.write_bytes(data)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            self._place(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Hard-link a complete temp file to `key`: the link fails if `key` exists (atomic, like O_EXCL)."""
        tmp = self._tmp()
        try:
            tmp.write_bytes(data)
            dest = self._path(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return None
            return _token(data)
        finally:
            tmp.unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return data, _token(data)

    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        """Compare, then rename over: a local store serves one machine, where this window is microseconds."""
        current = self.read_versioned(key)
        if current is None or current[1] != token:
            return None
        tmp = self._tmp()
        try:
            tmp.write_bytes(data)
            self._place(tmp, key)
        finally:
            tmp.unlink(missing_ok=True)
        return _token(data)

    def delete(self, keys: list[str]) -> None:
        parents: set[Path] = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def abort_stale_uploads(self, older_than: float, keep_prefixes: Sequence[str] = ()) -> int:
        """Remove temp files of interrupted writes older than `older_than` (gc); none while any push
        runs (`keep_prefixes`), since a temp file does not say which version it belongs to."""
        if keep_prefixes:
            return 0
        removed = 0
        tmp = self.root / TMP_DIR
        for path in tmp.iterdir() if tmp.is_dir() else []:
            if path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
