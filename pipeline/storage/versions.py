"""TF Serving version numbers: which exist locally, which one to write next (pure + listing).

The next number is one above every number known anywhere — the local export folder and
the store (committed, being pushed, reserved; see `pipeline.storage.reserve`) — because a
fresh checkout's empty `exports/` alone would always say 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import ExportError


def existing_versions(model_dir: Path) -> list[int]:
    """Integer-named sub-directories, as TF Serving sees them (others are ignored)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(*taken: Iterable[int]) -> int:
    """One above the highest number in any of `taken` (pure); 1 when nothing is taken."""
    return max((v for numbers in taken for v in numbers), default=0) + 1


def choose_version(existing: list[int], pinned: int | None, model_dir: Path) -> int:
    """Next integer after the highest, or the pinned one if it is free."""
    if pinned is None:
        return next_version(existing)
    if pinned in existing:
        raise ExportError(f"version {pinned} already exists at {model_dir / str(pinned)}; "
                          "refusing to overwrite (pick another --version or omit it)")
    return pinned


def refuse_committed_pin(model: str, pinned: int, committed: Iterable[int], where: str,
                         free: int) -> None:
    """A pinned version the store already committed is refused before any work (pure)."""
    if pinned in set(committed):
        raise ExportError(f"{model} version {pinned} is already committed in {where} and a committed version "
                          f"is never replaced; omit export.version / --version and the export takes the "
                          f"next free number ({free})")
