"""One push per version at a time: a lease object created with a conditional write.

Two pushes of the same version (two CI jobs, a laptop and CI) would otherwise
interleave their files and could commit a manifest that does not describe what is
stored. Before a push reads the version, it creates `.locks/<model>/<version>.json`
only if absent (S3 `If-None-Match: *`; a hard link locally). A second pusher gets a
one-line error naming the holder. A lock older than `stale_after_s` was left by a
crashed push and is taken over atomically (`If-Match` on its ETag). `.locks/` lies
outside the `<model>/<version>/` layout, so TF Serving and the store's readers never
see it.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pipeline.errors import StorageError
from pipeline.storage.base import Store

LOCK_PREFIX = ".locks"
DEFAULT_LOCK_STALE_S = 1800.0
log = logging.getLogger(__name__)


def lock_key(model: str, version: int) -> str:
    return f"{LOCK_PREFIX}/{model}/{version}.json"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a push lock, and since when (epoch seconds, the holder's clock)."""

    id: str
    owner: str
    acquired_at: float

    @classmethod
    def new(cls, now: float) -> LockInfo:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return cls(id=uuid.uuid4().hex, owner=f"{user}@{socket.gethostname()} pid {os.getpid()}",
                   acquired_at=now)

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> LockInfo | None:
        """None for an unreadable lock body (treated as stale: it cannot name a live holder)."""
        try:
            raw = json.loads(data)
            return cls(id=str(raw["id"]), owner=str(raw["owner"]), acquired_at=float(raw["acquired_at"]))
        except (ValueError, KeyError, TypeError):
            return None


def is_stale(holder: LockInfo | None, now: float, stale_after_s: float) -> bool:
    """A lock nobody can be holding any more (pure)."""
    return holder is None or now - holder.acquired_at >= stale_after_s


def _busy_error(model: str, version: int, holder: LockInfo, now: float, stale_after_s: float) -> StorageError:
    age = max(0.0, now - holder.acquired_at)
    return StorageError(
        f"another push of {model} version {version} is in progress ({holder.owner}, started {age:.0f} s ago); "
        f"wait for it, or if it crashed run `tfrollout storage unlock {model} {version}` "
        f"(locks older than {stale_after_s:.0f} s are taken over automatically)")


def acquire(store: Store, model: str, version: int, *, stale_after_s: float,
            now: Callable[[], float] = time.time) -> tuple[LockInfo, str]:
    """Take the version's push lock: (our lock, its token), or a StorageError naming the holder."""
    key = lock_key(model, version)
    mine = LockInfo.new(now())
    token = store.put_if_absent(key, mine.dumps())
    if token is not None:
        return mine, token
    current = store.read_versioned(key)
    if current is None:  # released between our two requests
        token = store.put_if_absent(key, mine.dumps())
    else:
        data, current_token = current
        holder = LockInfo.loads(data)
        if holder is not None and not is_stale(holder, now(), stale_after_s):
            raise _busy_error(model, version, holder, now(), stale_after_s)
        token = store.replace_if(key, mine.dumps(), current_token)
    if token is None:
        raise StorageError(f"another push of {model} version {version} took the lock at the same moment; "
                           f"run push again")
    return mine, token


def release(store: Store, model: str, version: int, mine: LockInfo) -> None:
    """Delete the lock if it is still ours (a push slower than `stale_after_s` may have lost it)."""
    key = lock_key(model, version)
    current = store.read_versioned(key)
    if current is not None and (holder := LockInfo.loads(current[0])) is not None and holder.id == mine.id:
        store.delete([key])


def release_quietly(store: Store, model: str, version: int, mine: LockInfo) -> None:
    """`release`, but a store that went away only leaves a lock to go stale (it is then taken over):
    the push's own result or error is what the user needs to see."""
    try:
        release(store, model, version, mine)
    except StorageError as exc:
        log.warning("could not release the push lock of %s version %s: %s", model, version, exc)


def force_unlock(store: Store, model: str, version: int) -> LockInfo | None:
    """Remove a version's push lock whoever holds it (`tfrollout storage unlock`); the removed holder."""
    key = lock_key(model, version)
    current = store.read_versioned(key)
    if current is None:
        return None
    store.delete([key])
    return LockInfo.loads(current[0]) or LockInfo(id="?", owner="unreadable lock", acquired_at=0.0)


def live_locks(store: Store, *, stale_after_s: float, now: float) -> dict[tuple[str, int], LockInfo]:
    """{(model, version): holder} for every push that may still be running (gc and ls leave those alone)."""
    live: dict[tuple[str, int], LockInfo] = {}
    for key in store.list(LOCK_PREFIX + "/"):
        parts = key[len(LOCK_PREFIX) + 1:].rsplit("/", 1)
        if len(parts) != 2 or not parts[1].endswith(".json") or not parts[1][:-5].isdigit():
            continue
        current = store.read_versioned(key)
        holder = LockInfo.loads(current[0]) if current else None
        if holder is not None and not is_stale(holder, now, stale_after_s):
            live[(parts[0], int(parts[1][:-5]))] = holder
    return live
