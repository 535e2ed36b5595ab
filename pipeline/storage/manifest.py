"""The per-version store manifest: the commit marker of a pushed version.

It lists every file (relative path, size, sha256) plus the export manifest's
metadata. It is written last, so a version is visible to readers only when the
manifest exists *and* every file it lists exists with the listed size.

Reading its file list (format, fields, path safety) is `serving.agent.manifest`, shared
with the replica agent, which checks the same manifest before a replica serves a version.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import StorageError
from serving.agent.manifest import MANIFEST_FORMAT, MANIFEST_NAME, file_list, load_manifest

EXPORT_MANIFEST_NAME = "tfrollout.json"
FORMAT = MANIFEST_FORMAT
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One file of a version, relative to the version directory (POSIX separators)."""

    path: str
    size: int
    sha256: str


@dataclass
class VersionManifest:
    """Everything needed to check a stored version without trusting the store's listing."""

    model_name: str
    version: int
    files: list[FileEntry]
    export: dict[str, Any] = field(default_factory=dict)
    committed_at: str = ""
    # path -> the store's token of the object as committed (ObjectInfo.token): a listing
    # shows a same-size rewrite after the commit without reading a byte (absent in
    # manifests written before tokens were recorded: sizes only, as then)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    def same_content(self, other: VersionManifest) -> bool:
        """True when both list the same files with the same sizes and checksums."""
        return self.by_path() == other.by_path()

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_name": self.model_name, "version": self.version,
                "committed_at": self.committed_at, "total_bytes": self.total_bytes,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
                "export": self.export, **({"store_tokens": self.tokens} if self.tokens else {})}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes, where: str = "manifest") -> VersionManifest:
        """Parse and validate; a malformed manifest is a StorageError naming `where`."""
        try:
            raw = load_manifest(data)
            files = [FileEntry(*entry) for entry in file_list(raw)]
            tokens = {str(k): str(v) for k, v in dict(raw.get("store_tokens") or {}).items()}
            return cls(model_name=str(raw["model_name"]), version=int(raw["version"]), files=files,
                       export=dict(raw.get("export") or {}), committed_at=str(raw.get("committed_at", "")),
                       tokens=tokens)
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{where}: unreadable store manifest ({exc})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan_dir(version_dir: Path) -> list[FileEntry]:
    """Every regular file under `version_dir`, hashed, sorted by path (symlinks are refused)."""
    if not version_dir.is_dir():
        raise StorageError(f"version directory not found: {version_dir}")
    entries = []
    for root, dirs, names in os.walk(version_dir):
        dirs.sort()
        for name in sorted(names):
            full = Path(root) / name
            rel = full.relative_to(version_dir).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if full.is_symlink():
                raise StorageError(f"{full}: symlinks are not pushed; copy the file instead")
            entries.append(FileEntry(rel, full.stat().st_size, sha256_file(full)))
    if not entries:
        raise StorageError(f"version directory is empty: {version_dir}")
    return entries


def read_export_metadata(version_dir: Path) -> dict[str, Any]:
    """The export stage's manifest (if any), carried into the store manifest for readers."""
    path = version_dir / EXPORT_MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise StorageError(f"{path}: invalid JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def build_manifest(version_dir: Path, model_name: str, version: int) -> VersionManifest:
    """Hash a local version directory into the manifest that will commit it."""
    return VersionManifest(model_name=model_name, version=version, files=scan_dir(version_dir),
                           export=read_export_metadata(version_dir))


def stamp(manifest: VersionManifest, now: datetime | None = None) -> VersionManifest:
    manifest.committed_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    return manifest


def changed_since_commit(manifest: VersionManifest, tokens: Mapping[str, str | None]) -> list[str]:
    """Files whose store token differs from the one recorded at the commit (pure): each
    was rewritten since (or copied by a tool that does not keep tokens) and must be
    checked against its sha256 before the version counts as committed."""
    return [path for path, recorded in sorted(manifest.tokens.items())
            if tokens.get(path) is not None and tokens[path] != recorded]


def check_listing(manifest: VersionManifest, sizes: Mapping[str, int]) -> list[str]:
    """Problems that make a manifest *not* a commit: missing files or wrong sizes (pure)."""
    problems = []
    for entry in manifest.files:
        got = sizes.get(entry.path)
        if got is None:
            problems.append(f"missing {entry.path}")
        elif got != entry.size:
            problems.append(f"{entry.path}: size {got} != {entry.size}")
    return problems


def upload_order(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """(first, last): `saved_model.pb` goes last so a poller never sees a graph without variables."""
    first: list[str] = []
    last: list[str] = []
    for path in paths:
        (last if path in ("saved_model.pb", "saved_model.pbtxt") else first).append(path)
    first.sort(key=lambda p: (not p.startswith("variables/"), p))
    return first, last
