"""Clean-up after a commit point: retried a few times, then owed — never undoing what was committed.

Once a verified version is promoted, removing what the rollout left (old objects, the
lock) may fail; it is retried here and, if it still fails, reported as pending for the
next rollout, rollback or status to finish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CLEANUP_ATTEMPTS = 3


def retried(step: Callable[[], Any], attempts: int, pause_s: float = 1.0,
            sleep: Callable[[float], None] = time.sleep) -> Exception | None:
    """Run a clean-up step up to `attempts` times; None once it succeeds, else the last error."""
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            step()
            return None
        except Exception as exc:  # noqa: BLE001 - after the commit point every failure is retried, then owed
            error = exc
            if attempt + 1 < attempts:
                sleep(pause_s * (attempt + 1))
    return error


def joined(*notes: str | None) -> str | None:
    """Several clean-up notes as one line (None when there are none)."""
    present = [n for n in notes if n]
    return "; ".join(present) or None
