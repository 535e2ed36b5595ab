"""sha256 of a model file or SavedModel directory: the fingerprint model-side checks compare.

A module of its own so that it depends on nothing in the package: the source loader
(`source`), the SavedModel base's stale-source check (`saved_model_base`) and the
outcome records all need it, and `source` imports `saved_model_base`, which could
therefore not take it from `source` without an import cycle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files in path order (SavedModel)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
