"""Version numbers handed out by the store, so fresh checkouts sharing a store never collide.

A CI job starts from a fresh clone: its local `exports/` folder is empty, so a number
taken from it alone is always 1, and every run after the first is refused at push. The
export stage instead takes one above every number the store knows — committed or
half-uploaded versions, push locks, reservations — plus the local exports, and claims
it with a conditional create of `.reserved/<model>/<version>.json` (S3 `If-None-Match:
*`; a hard link locally, see `Store.put_if_absent`). Of two jobs that pick the same
number, one create fails, and that job moves to the next number.

The reservation names the export's run id, which the export also writes into the
version's `tfrollout.json`: the push of that directory recognises it as its own, and a
push of another directory under a reserved number is refused. The commit deletes the
reservation (the manifest is the claim from then on). A reservation whose export never
pushed goes stale after `storage.reservation_stale_s`: `storage gc` removes it, and a
pinned export or a push may take it over.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from pipeline.errors import StorageError
from pipeline.storage.lock import LOCK_PREFIX, owner_text
from pipeline.storage.scan import group_versions
from pipeline.storage.store import Store
from pipeline.storage.versions import next_version

RESERVE_PREFIX = ".reserved"
DEFAULT_RESERVATION_STALE_S = 86400.0
MAX_ATTEMPTS = 64
log = logging.getLogger(__name__)


def reservation_key(model: str, version: int) -> str:
    return f"{RESERVE_PREFIX}/{model}/{version}.json"


@dataclass(frozen=True)
class Reservation:
    """Who claimed a version number, for which export run, and when (epoch s, holder's clock)."""

    id: str
    owner: str
    run_id: str | None
    reserved_at: float

    @classmethod
    def new(cls, run_id: str | None, now: float) -> Reservation:
        return cls(id=uuid.uuid4().hex, owner=owner_text(), run_id=run_id, reserved_at=now)

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> Reservation | None:
        """None for an unreadable body (it cannot name its holder: treated as stale)."""
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict):
                return None
            run_id = raw.get("run_id")
            return cls(id=str(raw["id"]), owner=str(raw["owner"]),
                       run_id=None if run_id is None else str(run_id), reserved_at=float(raw["reserved_at"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def belongs_to(self, run_id: str | None) -> bool:
        """The same export run (a resumed run keeps its id; a copied export directory carries it)."""
        return run_id is not None and self.run_id == run_id

    def describe(self, now: float) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        return f"{self.owner}{run}, {max(0.0, now - self.reserved_at):.0f} s ago"


def is_stale(holder: Reservation | None, now: float, stale_after_s: float) -> bool:
    """A reservation nobody will push any more (pure)."""
    return holder is None or now - holder.reserved_at >= stale_after_s


def numbered_keys(keys: Iterable[str], prefix: str, model: str) -> set[int]:
    """Version numbers of `<prefix>/<model>/<N>.json` keys (pure)."""
    head = f"{prefix}/{model}/"
    out = set()
    for key in keys:
        if key.startswith(head) and key.endswith(".json") and key[len(head):-5].isdigit():
            out.add(int(key[len(head):-5]))
    return out


@dataclass
class TakenNumbers:
    """Every version number of one model the store knows about, by where it was seen."""

    stored: set[int] = field(default_factory=set)  # objects under <model>/<N>/ (committed or not)
    locked: set[int] = field(default_factory=set)  # a push lock (maybe nothing uploaded yet)
    reserved: set[int] = field(default_factory=set)  # an export claimed it

    def all(self) -> set[int]:
        return self.stored | self.locked | self.reserved


def taken_numbers(store: Store, model: str) -> TakenNumbers:
    """Three listings: the versions, the push locks and the reservations of `model`."""
    stored = {version for (name, version) in group_versions(store.list_objects(f"{model}/")) if name == model}
    return TakenNumbers(stored=stored,
                        locked=numbered_keys(store.list_objects(f"{LOCK_PREFIX}/{model}/"), LOCK_PREFIX, model),
                        reserved=numbered_keys(store.list_objects(f"{RESERVE_PREFIX}/{model}/"),
                                               RESERVE_PREFIX, model))


def read_reservation(store: Store, model: str, version: int) -> tuple[Reservation | None, str] | None:
    """(holder or None if unreadable, token), or None when the number is not reserved."""
    current = store.read_versioned(reservation_key(model, version))
    if current is None:
        return None
    return Reservation.loads(current[0]), current[1]


def reserve(store: Store, model: str, version: int, *, run_id: str | None, stale_after_s: float,
            now: float | None = None, take_over_stale: bool = True) -> Reservation | None:
    """Claim `version` for `run_id`: the reservation, or None if another export holds it.

    An existing reservation of the same run is returned as is (a resumed export); a stale
    one is taken over with a conditional replace when `take_over_stale`.
    """
    when = time.time() if now is None else now
    key = reservation_key(model, version)
    mine = Reservation.new(run_id, when)
    if store.put_if_absent(key, mine.dumps()) is not None:
        return mine
    current = read_reservation(store, model, version)
    if current is None:  # released between our two requests
        return mine if store.put_if_absent(key, mine.dumps()) is not None else None
    holder, token = current
    if holder is not None and holder.belongs_to(run_id):
        return holder
    if take_over_stale and is_stale(holder, when, stale_after_s):
        return mine if store.replace_if(key, mine.dumps(), token) is not None else None
    return None


def reserve_next(store: Store, model: str, *, local: Iterable[int], run_id: str | None,
                 stale_after_s: float, now: float | None = None) -> tuple[int, Reservation]:
    """Reserve one above everything taken (on a lost race, the next number): (number, reservation).

    A reservation this run already holds for a number nothing else uses (an earlier try
    of the same run that failed after reserving) is reused. StorageError after
    MAX_ATTEMPTS lost races.
    """
    taken = taken_numbers(store, model)
    local = set(local)
    for version in sorted(taken.reserved - taken.stored - taken.locked - local):
        found = read_reservation(store, model, version)
        if found is not None and found[0] is not None and found[0].belongs_to(run_id):
            return version, found[0]
    candidate = next_version(taken.all(), local)
    for _ in range(MAX_ATTEMPTS):
        got = reserve(store, model, candidate, run_id=run_id, stale_after_s=stale_after_s, now=now,
                      take_over_stale=False)
        if got is not None and not store.list_objects(f"{model}/{candidate}/"):
            return candidate, got
        if got is not None:  # a push without a reservation (an older client) is using the number
            release_quietly(store, model, candidate, got)
        candidate += 1
    raise StorageError(f"could not reserve a version number of {model} in {store.uri} after "
                       f"{MAX_ATTEMPTS} tries (other exports took every one); try again")


def release(store: Store, model: str, version: int, mine: Reservation) -> bool:
    """Delete the reservation if it is still ours; True if it was deleted."""
    current = read_reservation(store, model, version)
    if current is None or current[0] is None or current[0].id != mine.id:
        return False
    store.delete([reservation_key(model, version)])
    return True


def release_quietly(store: Store, model: str, version: int, mine: Reservation) -> None:
    """`release` that only logs a store error: the reservation then goes stale and gc collects it."""
    try:
        release(store, model, version, mine)
    except StorageError as exc:
        log.warning("could not release the reservation of %s version %s: %s", model, version, exc)


def drop_own_reservation(store: Store, model: str, version: int, run_id: str) -> None:
    """After a push found its version already committed: remove this run's leftover reservation."""
    try:
        found = read_reservation(store, model, version)
        if found is not None and found[0] is not None and found[0].belongs_to(run_id):
            release(store, model, version, found[0])
    except StorageError as exc:
        log.warning("could not remove the reservation of %s version %s: %s", model, version, exc)


def claim_for_push(store: Store, model: str, version: int, *, run_id: str | None,
                   stale_after_s: float, now: float | None = None) -> Reservation:
    """The push's right to `version`: its export's reservation, a new one, or a one-line refusal."""
    when = time.time() if now is None else now
    got = reserve(store, model, version, run_id=run_id, stale_after_s=stale_after_s, now=when)
    if got is not None:
        return got
    current = read_reservation(store, model, version)
    holder = current[0] if current else None
    who = holder.describe(when) if holder is not None else "another export"
    raise StorageError(f"{model} version {version} is taken: reserved by another export ({who}); this "
                       f"directory was not exported under that reservation, so it is not pushed — export "
                       f"again and the export picks a fresh version number")


def reservations(store: Store, model: str | None = None) -> dict[tuple[str, int], Reservation | None]:
    """{(model, version): holder (None if unreadable)} for every reservation (of `model`)."""
    prefix = f"{RESERVE_PREFIX}/{model}/" if model else f"{RESERVE_PREFIX}/"
    found: dict[tuple[str, int], Reservation | None] = {}
    for key in store.list_objects(prefix):
        parts = key[len(RESERVE_PREFIX) + 1:].rsplit("/", 1)
        if len(parts) != 2 or not parts[1].endswith(".json") or not parts[1][:-5].isdigit():
            continue
        current = store.read_versioned(key)
        if current is not None:
            found[(parts[0], int(parts[1][:-5]))] = Reservation.loads(current[0])
    return found


def collectable(found: Mapping[tuple[str, int], Reservation | None], committed: Iterable[tuple[str, int]],
                *, now: float, stale_after_s: float) -> list[tuple[str, int]]:
    """Reservations gc may delete (pure): stale ones, and those whose version is committed
    (a push that crashed between its commit and deleting the reservation)."""
    done = set(committed)
    return sorted(k for k, holder in found.items() if k in done or is_stale(holder, now, stale_after_s))
