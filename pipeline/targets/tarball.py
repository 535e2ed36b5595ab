"""Build the tar streamed into the serving host's volume (pure: bytes in, bytes out).

Member names are always relative, normalised and free of `..`; symlinks and
special files are refused, so extracting the archive can only write below the
volume's mount point.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable
from pathlib import Path


def safe_name(name: str) -> str:
    """A normalised relative POSIX member name; ValueError for absolute paths or `..`."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        raise ValueError(f"unsafe tar member name: {name!r}")
    parts = name.split("/")
    if any(p in ("..", "") for p in parts[:-1]) or parts[-1] in ("..", ""):
        raise ValueError(f"unsafe tar member name: {name!r}")
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm.startswith("/") or norm == ".":
        raise ValueError(f"unsafe tar member name: {name!r}")
    return norm


def _info(name: str, size: int, mode: int, mtime: float, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(safe_name(name))
    info.size, info.mode, info.mtime, info.type = size, mode, int(mtime), kind
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_tar(files: Iterable[tuple[str, bytes]], dirs: Iterable[str] = (), mtime: float = 0.0,
              mode: int = 0o644) -> bytes:
    """A tar of in-memory files (and directories, listed first), in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_info(d, 0, 0o755, mtime, tarfile.DIRTYPE))
        for name, data in files:
            tar.addfile(_info(name, len(data), mode, mtime), io.BytesIO(data))
    return buf.getvalue()


def directory_members(source: Path, prefix: str) -> tuple[list[str], list[tuple[str, Path]]]:
    """(dirs, files) under `source` as `<prefix>/<relative>` names, sorted; refuses links and specials."""
    dirs, files = [prefix], []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if path.is_symlink():
            raise ValueError(f"refusing to ship a symlink: {path}")
        if path.is_dir():
            dirs.append(f"{prefix}/{rel}")
        elif path.is_file():
            files.append((f"{prefix}/{rel}", path))
        else:
            raise ValueError(f"refusing to ship a special file: {path}")
    return dirs, files


def version_tar(source: Path, model: str, version: int, marker: tuple[str, bytes]) -> bytes:
    """`<model>/<version>/...` from `source`, with the delivery marker as the *last* member."""
    prefix = f"{safe_name(model)}/{int(version)}"
    dirs, files = directory_members(source, prefix)
    contents = [(name, path.read_bytes()) for name, path in files]
    contents.append((f"{prefix}/{marker[0]}", marker[1]))
    return build_tar(contents, [safe_name(model), *dirs])


def read_member(archive: bytes, name: str) -> bytes | None:
    """One file's bytes from a tar (as returned by get_archive), or None."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and (member.name == name or member.name.endswith("/" + name)):
                fh = tar.extractfile(member)
                return fh.read() if fh else None
    return None
