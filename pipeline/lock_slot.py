"""Taking a lock held in one named slot: written once for every place that keeps one.

A rollout lock lives in a file (local runtime), a stopped container (Docker) or a
swarm config object; a push lock in an object of the store. Each place can only
*create if absent*, *read* and *replace what it read*; `take` is the one loop over
those three steps: create, else read the holder, take it over if it is stale
(crashed, silent too long or gone in between), else refuse naming the holder.
`LockHolder` is the rollout locks' record: who, where, and the process that holds it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pipeline.errors import RolloutError
from pipeline.process_identity import ProcessIdentity, boot_id

H = TypeVar("H")
H_co = TypeVar("H_co", covariant=True)


class LockSlot(Protocol[H_co]):
    """The three operations a place that holds a lock offers."""

    def create(self) -> str | None:
        """Write our record if the slot is empty: a token for it, or None when it is taken."""

    def read(self) -> tuple[H_co | None, str] | None:
        """(holder, or None when its record is unreadable; a token for replace), or None when empty."""

    def replace(self, token: str) -> str | None:
        """Put our record over the one read with `token`: our token, or None if it changed since."""


def take(slot: LockSlot[H], *, stale: Callable[[H | None], bool], busy: Callable[[H], Exception],
         raced: Callable[[], Exception], attempts: int = 2) -> str:
    """Our record's token once we hold the slot; `busy(holder)` while a live holder has it.

    `stale(None)` decides an unreadable record. Each round either takes the slot or
    learns something new (gone, stale, live), so a few rounds end every race: after
    `attempts` the caller's `raced()` error asks for a retry.
    """
    for _ in range(attempts):
        token = slot.create()
        if token is not None:
            return token
        current = slot.read()
        if current is None:  # released between our two requests
            continue
        holder, held_token = current
        if stale(holder):
            token = slot.replace(held_token)
            if token is not None:
                return token
            continue
        if holder is None:  # an unreadable record the caller will not take over
            raise raced()
        raise busy(holder)
    raise raced()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a rollout lock: enough to tell a crashed holder from a live one on this machine."""

    owner: str
    hostname: str
    identity: ProcessIdentity | None
    at: float

    @classmethod
    def me(cls, owner: str) -> LockHolder:
        return cls(owner, socket.gethostname(), ProcessIdentity.of(os.getpid(), ""), time.time())

    @classmethod
    def unreadable(cls, what: str) -> LockHolder:
        """A record that names nobody: never provably dead, so it is refused, not taken over."""
        return cls(what, "", None, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "hostname": self.hostname, "at": self.at,
                "pid": self.identity.pid if self.identity else None,
                "identity": self.identity.to_json() if self.identity else None}

    @classmethod
    def from_json(cls, data: Any) -> LockHolder | None:
        if not isinstance(data, dict):
            return None
        try:
            at = float(data.get("at", 0.0))
        except (TypeError, ValueError):
            at = 0.0
        return cls(str(data.get("owner", "unknown")), str(data.get("hostname", "")),
                   ProcessIdentity.from_json(data.get("identity")), at)

    def crashed(self) -> bool:
        """True only when provably dead: same machine and boot, and the process is gone or reused."""
        if self.identity is None or self.hostname != socket.gethostname():
            return False
        if self.identity.boot_id and self.identity.boot_id != boot_id():
            return True
        return self.identity.mismatch() is not None

    def stale(self, now: float, stale_after_s: float) -> bool:
        """Crashed, or older than `stale_after_s` (a record of unknown age is never stale)."""
        return self.crashed() or (self.at > 0 and now - self.at > stale_after_s)

    def running_here(self) -> bool:
        """Provably alive: recorded on this machine and its process still matches."""
        return self.identity is not None and self.hostname == socket.gethostname() and not self.crashed()

    def refuse_removal(self, where: str) -> None:
        """Raise for `serve unlock` on a live holder: its rollout would go on without a lock."""
        if self.running_here():
            raise RolloutError(f"the rollout lock on {where} is held by a running process "
                               f"({self.describe(time.time())}); not removing it (stop that process first, "
                               "or pass --force if you are sure)")

    def describe(self, now: float) -> str:
        age = max(0.0, now - self.at)
        state = "crashed" if self.crashed() else "running" if self.identity and self.hostname else "unknown state"
        pid = f" pid {self.identity.pid}" if self.identity else ""
        return f"{self.owner} on {self.hostname or '?'}{pid}, {age:.0f} s ago, {state}"


class HolderRecords(Protocol):
    """Where a target keeps its rollout lock record (a file, a stopped container, a swarm config)."""

    def create(self, holder: LockHolder) -> bool:
        """Store `holder` if no record exists; False when one does."""

    def read(self) -> LockHolder | None:
        """The record (`LockHolder.unreadable` for one that names nobody), or None when there is none."""

    def remove(self) -> bool:
        """Delete the record; False when there was none."""


class RolloutLock:
    """A serving target's rollout lock: one `take` loop over the target's record store.

    A take-over removes the stale record and creates ours: none of these places can
    replace atomically, and the create that follows still fails if someone else won.
    """

    def __init__(self, records: HolderRecords, where: str):
        self.records = records
        self.where = where
        self._owner = ""
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def holder(self) -> LockHolder | None:
        return self.records.read()

    # -- the LockSlot protocol
    def create(self) -> str | None:
        return "held" if self.records.create(LockHolder.me(self._owner)) else None

    def read(self) -> tuple[LockHolder | None, str] | None:
        holder = self.records.read()
        return None if holder is None else (holder, "")

    def replace(self, token: str) -> str | None:
        self.records.remove()
        return self.create()

    # -- what targets call
    def acquire(self, owner: str, stale_after_s: float) -> None:
        self._owner = owner
        take(self, stale=lambda h: h is not None and h.stale(time.time(), stale_after_s),
             busy=self._busy, raced=lambda: RolloutError("cannot take the rollout lock"))
        self._held = True

    def _busy(self, holder: LockHolder) -> RolloutError:
        return RolloutError(f"another rollout is in progress on {self.where} (lock held by "
                            f"{holder.describe(time.time())}); wait for it to finish — if that process is "
                            "gone, `tfrollout serve unlock` removes the lock")

    def release(self) -> None:
        if self._held:
            self.records.remove()
            self._held = False

    def force_remove(self, *, even_if_alive: bool = False) -> bool:
        """Remove the lock after a crash; a holder provably running on this machine is refused."""
        holder = self.records.read()
        if holder is None:
            return False
        if not even_if_alive:
            holder.refuse_removal(self.where)
        return self.records.remove()
