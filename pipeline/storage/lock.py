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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.errors import StorageError
from pipeline.lock_slot import take
from pipeline.process_identity import ProcessIdentity
from pipeline.storage.store import Store

LOCK_PREFIX = ".locks"
DEFAULT_LOCK_STALE_S = 1800.0
log = logging.getLogger(__name__)


def lock_key(model: str, version: int) -> str:
    return f"{LOCK_PREFIX}/{model}/{version}.json"


@dataclass(frozen=True)
class LockInfo:
    """Who holds a push lock, since when, and when it last said it is alive (epoch s, holder's clock)."""

    id: str
    owner: str
    acquired_at: float
    renewed_at: float | None = None
    hostname: str | None = None  # with `process`: lets this machine tell a crashed push from a live one
    process: dict[str, Any] | None = None  # ProcessIdentity of the pushing process

    @property
    def last_seen(self) -> float:
        return self.acquired_at if self.renewed_at is None else self.renewed_at

    @classmethod
    def new(cls, now: float) -> LockInfo:
        identity = ProcessIdentity.of(os.getpid(), "")
        return cls(id=uuid.uuid4().hex, owner=owner_text(),
                   acquired_at=now, hostname=socket.gethostname(),
                   process=identity.to_json() if identity else None)

    def crashed_here(self) -> bool:
        """The pushing process ran on this machine and is gone (or its pid is another process now)."""
        if self.hostname != socket.gethostname() or self.process is None:
            return False
        identity = ProcessIdentity.from_json(self.process)
        return identity is not None and identity.mismatch() is not None

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> LockInfo | None:
        """None for an unreadable lock body (treated as stale: it cannot name a live holder)."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                return None
            renewed = raw["renewed_at"] if "renewed_at" in raw else None
            process = raw.get("process")
            return cls(id=str(raw["id"]), owner=str(raw["owner"]), acquired_at=float(raw["acquired_at"]),
                       renewed_at=None if renewed is None else float(renewed),
                       hostname=None if raw.get("hostname") is None else str(raw["hostname"]),
                       process=process if isinstance(process, dict) else None)
        except (ValueError, KeyError, TypeError):
            return None


def owner_text() -> str:
    """`user@host pid N`: who holds a lock or a reservation, as error messages name them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def is_stale(holder: LockInfo | None, now: float, stale_after_s: float) -> bool:
    """A lock nobody can be holding any more: silent too long, or its push died on this machine.

    The second rule spares a user whose push was killed (Ctrl-C twice, OOM, kill -9) the
    `stale_after_s` wait (30 min by default) before pushing again from the same machine.
    """
    return holder is None or now - holder.last_seen >= stale_after_s or holder.crashed_here()


def _busy_error(model: str, version: int, holder: LockInfo, now: float, stale_after_s: float) -> StorageError:
    age = max(0.0, now - holder.acquired_at)
    return StorageError(
        f"another push of {model} version {version} is in progress ({holder.owner}, started {age:.0f} s ago, "
        f"alive {max(0.0, now - holder.last_seen):.0f} s ago); "
        f"wait for it, or if it crashed run `tfrollout storage unlock {model} {version}` "
        f"(locks silent for {stale_after_s:.0f} s are taken over automatically)")


class _PushLockSlot:
    """The version's push lock object, as `lock_slot.take` drives it."""

    def __init__(self, store: Store, key: str, mine: LockInfo):
        self.store, self.key, self.mine = store, key, mine

    def create(self) -> str | None:
        return self.store.put_if_absent(self.key, self.mine.dumps())

    def read(self) -> tuple[LockInfo | None, str] | None:
        current = self.store.read_versioned(self.key)
        return None if current is None else (LockInfo.loads(current[0]), current[1])

    def replace(self, token: str) -> str | None:
        return self.store.replace_if(self.key, self.mine.dumps(), token)


def acquire(store: Store, model: str, version: int, *, stale_after_s: float,
            now: Callable[[], float] = time.time) -> tuple[LockInfo, str]:
    """Take the version's push lock: (our lock, its token), or a StorageError naming the holder."""
    mine = LockInfo.new(now())
    token = take(_PushLockSlot(store, lock_key(model, version), mine),
                 stale=lambda holder: is_stale(holder, now(), stale_after_s),
                 busy=lambda holder: _busy_error(model, version, holder, now(), stale_after_s),
                 raced=lambda: StorageError(f"another push of {model} version {version} took the lock at "
                                            "the same moment; run push again"))
    return mine, token


class Lease:
    """A held push lock, renewed in the background so a long upload never looks like a crashed one.

    Renewal is a conditional replace on the token we last wrote: if it fails, someone took
    the lock over (or removed it) and `check_held` refuses the commit.
    """

    def __init__(self, store: Store, model: str, version: int, info: LockInfo, token: str, *,
                 stale_after_s: float, now: Callable[[], float] = time.time) -> None:
        self.store, self.model, self.version = store, model, version
        self.info, self._token, self._now = info, token, now
        self._interval = max(0.05, stale_after_s / 3)
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self.lost = False
        self._thread = threading.Thread(target=self._renew_loop, name="push-lock", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.renew()
            except StorageError as exc:  # the store is unreachable: the upload will say so
                log.warning("could not renew the push lock of %s version %s: %s", self.model, self.version, exc)

    def renew(self) -> None:
        """Read, then replace on our token. The read matters on stores where If-Match on a missing
        key succeeds (MinIO before Aug 2025): a removed lock must stay lost, not be recreated."""
        key = lock_key(self.model, self.version)
        with self._guard:
            if self.lost:
                return
            current = self.store.read_versioned(key)
            if current is None or current[1] != self._token:
                self.lost = True
                return
            info = replace(self.info, renewed_at=self._now())
            token = self.store.replace_if(key, info.dumps(), self._token)
            if token is None:
                self.lost = True
            else:
                self.info, self._token = info, token

    def check_held(self) -> None:
        """Raise unless the lock is still ours (called just before the commit)."""
        with self._guard:
            current = self.store.read_versioned(lock_key(self.model, self.version))
            holder = LockInfo.loads(current[0]) if current else None
            if self.lost or holder is None or holder.id != self.info.id:
                who = f" ({holder.owner} holds it now)" if holder is not None and holder.id != self.info.id else ""
                raise StorageError(f"lost the push lock of {self.model} version {self.version}{who}; "
                                   f"nothing was committed — check the version, then push again")

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours; never raises (see `release_quietly`)."""
        self._stop.set()
        self._thread.join(timeout=5)
        release_quietly(self.store, self.model, self.version, self.info)


def take_lease(store: Store, model: str, version: int, *, stale_after_s: float,
               now: Callable[[], float] = time.time) -> Lease:
    """`acquire`, then keep the lock alive until `Lease.release()`."""
    info, token = acquire(store, model, version, stale_after_s=stale_after_s, now=now)
    return Lease(store, model, version, info, token, stale_after_s=stale_after_s, now=now)


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


def live_locks(store: Store, *, stale_after_s: float, now: float,
               model: str | None = None) -> dict[tuple[str, int], LockInfo]:
    """{(model, version): holder} for every push (of `model`) that may still be running; gc and ls
    leave those alone."""
    live: dict[tuple[str, int], LockInfo] = {}
    for key in store.list_objects(f"{LOCK_PREFIX}/{model}/" if model else f"{LOCK_PREFIX}/"):
        parts = key[len(LOCK_PREFIX) + 1:].rsplit("/", 1)
        if len(parts) != 2 or not parts[1].endswith(".json") or not parts[1][:-5].isdigit():
            continue
        current = store.read_versioned(key)
        holder = LockInfo.loads(current[0]) if current else None
        if holder is not None and not is_stale(holder, now, stale_after_s):
            live[(parts[0], int(parts[1][:-5]))] = holder
    return live
