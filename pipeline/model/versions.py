"""TF Serving version directories: which exist, which one to write next (pure + listing)."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ExportError


def existing_versions(model_dir: Path) -> list[int]:
    """Integer-named sub-directories, as TF Serving sees them (others are ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def choose_version(existing: list[int], pinned: int | None, model_dir: Path) -> int:
    """Next integer after the highest, or the pinned one if it is free."""
    if pinned is None:
        return (max(existing) + 1) if existing else 1
    if pinned in existing:
        raise ExportError(f"version {pinned} already exists at {model_dir / str(pinned)}; "
                          "refusing to overwrite (pick another --version or omit it)")
    return pinned
