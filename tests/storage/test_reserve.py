"""Version numbers reserved in the store: pure rules, then both stores (file:// and a moto process)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ExportError, StorageError
from pipeline.storage import Store, open_store
from pipeline.storage.gc import collect_garbage
from pipeline.storage.local import LocalStore
from pipeline.storage.lock import acquire
from pipeline.storage.manifest import build_manifest
from pipeline.storage.publish import claim_identity, push_version
from pipeline.storage.reserve import (
    RESERVE_PREFIX,
    Reservation,
    claim_for_push,
    collectable,
    numbered_keys,
    read_reservation,
    reservation_key,
    reservations,
    reserve,
    reserve_next,
    taken_numbers,
)
from pipeline.storage.uri import parse_uri
from pipeline.storage.versions import next_version, refuse_committed_pin
from tests.storage.conftest import MotoServer, s3_config, write_version

DAY = 86400.0


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(parse_uri(f"file://{tmp_path}/store"))
    moto: MotoServer = request.getfixturevalue("moto")
    return open_store(s3_config(moto, request.getfixturevalue("bucket")))


def _twin(store: Store) -> Store:
    """A second, independent handle on the same store (another CI job: its own client)."""
    if isinstance(store, LocalStore):
        return LocalStore(store.location)
    from pipeline.storage.s3 import S3Store

    assert isinstance(store, S3Store)
    return S3Store(store.location, store.cfg)


def _with_run_id(vdir: Path, run_id: str) -> Path:
    meta = json.loads((vdir / "tfrollout.json").read_text())
    (vdir / "tfrollout.json").write_text(json.dumps({**meta, "run_id": run_id}))
    return vdir


# ------------------------------------------------------------------ pure


def test_next_version_is_one_above_every_source() -> None:
    assert next_version() == 1 and next_version([], set()) == 1
    assert next_version([1, 2], {7}, [3]) == 8


def test_pinned_committed_version_is_refused_in_one_line() -> None:
    refuse_committed_pin("digits", 3, [1, 2], "s3://b/m", free=4)  # not committed: fine
    with pytest.raises(ExportError) as err:
        refuse_committed_pin("digits", 2, [1, 2], "s3://b/m", free=4)
    message = str(err.value)
    assert "digits version 2 is already committed in s3://b/m" in message and "(4)" in message
    assert "\n" not in message and "--force" not in message


def test_reservation_body_round_trips_and_junk_is_unreadable() -> None:
    mine = Reservation.new("run1", now=100.0)
    assert Reservation.loads(mine.dumps()) == mine
    assert mine.belongs_to("run1") and not mine.belongs_to("run2") and not mine.belongs_to(None)
    assert not Reservation.new(None, now=1.0).belongs_to(None)  # no run id: nobody's but its own id
    for junk in (b"", b"[]", b"{", b'{"id": 1}', b'{"id": "x", "owner": "o", "reserved_at": "later"}'):
        assert Reservation.loads(junk) is None


def test_numbered_keys_and_collectable() -> None:
    keys = [".reserved/digits/3.json", ".reserved/digits/x.json", ".reserved/digitsX/4.json",
            ".reserved/digits/10.json", ".reserved/digits/5.txt"]
    assert numbered_keys(keys, RESERVE_PREFIX, "digits") == {3, 10}
    fresh, old = Reservation.new("a", now=1000.0), Reservation.new("b", now=0.0)
    found = {("m", 1): fresh, ("m", 2): old, ("m", 3): None, ("m", 4): fresh}
    assert collectable(found, [("m", 4)], now=1000.0 + 10, stale_after_s=500) == [("m", 2), ("m", 3), ("m", 4)]


def test_claim_identity_is_the_run_id_else_the_content(tmp_path: Path) -> None:
    a = build_manifest(write_version(tmp_path / "a"), "digits", 1)
    b = build_manifest(write_version(tmp_path / "b"), "digits", 1)
    c = build_manifest(write_version(tmp_path / "c", seed=5), "digits", 1)
    assert claim_identity(a) == claim_identity(b) != claim_identity(c)  # same files: same claim
    run = build_manifest(_with_run_id(write_version(tmp_path / "d"), "abc123"), "digits", 1)
    assert claim_identity(run) == "abc123"


# ------------------------------------------------------------------ both stores


def test_taken_numbers_see_versions_locks_and_reservations(store: Store, tmp_path: Path) -> None:
    push_version(store, write_version(tmp_path / "e"), "digits", 2, create=True)
    store.put_bytes("digits/5/variables/variables.index", b"half an upload")
    acquire(store, "digits", 9, stale_after_s=600)
    assert reserve(store, "digits", 7, run_id="r", stale_after_s=DAY) is not None
    push_version(store, write_version(tmp_path / "o", name="other"), "other", 30, create=True)
    taken = taken_numbers(store, "digits")
    assert (taken.stored, taken.locked, taken.reserved) == ({2, 5}, {9}, {7})
    number, holder = reserve_next(store, "digits", local=[3], run_id="next", stale_after_s=DAY)
    assert number == 10 and holder.run_id == "next"
    assert reserve_next(store, "digits", local=[12], run_id="later", stale_after_s=DAY)[0] == 13


def test_concurrent_reservations_of_one_number_exactly_one_wins(store: Store) -> None:
    contenders = 8
    handles = [_twin(store) for _ in range(contenders)]
    start = threading.Barrier(contenders)
    won: list[int] = []
    errors: list[BaseException] = []

    def contend(i: int) -> None:
        try:
            start.wait()
            if reserve(handles[i], "digits", 4, run_id=f"job{i}", stale_after_s=DAY) is not None:
                won.append(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(won) == 1
    found = read_reservation(store, "digits", 4)
    assert found is not None and found[0] is not None and found[0].run_id == f"job{won[0]}"


def test_concurrent_next_reservations_get_distinct_numbers(store: Store) -> None:
    jobs = 6
    handles = [_twin(store) for _ in range(jobs)]
    start = threading.Barrier(jobs)
    got: dict[int, int] = {}

    def job(i: int) -> None:
        start.wait()
        got[i] = reserve_next(handles[i], "digits", local=[], run_id=f"job{i}", stale_after_s=DAY)[0]

    threads = [threading.Thread(target=job, args=(i,)) for i in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got.values()) == list(range(1, jobs + 1))  # every job its own number, no gaps


def test_same_run_reuses_its_reservation_and_a_stale_one_is_taken_over(store: Store) -> None:
    first = reserve_next(store, "digits", local=[], run_id="runA", stale_after_s=DAY)
    again = reserve_next(store, "digits", local=[], run_id="runA", stale_after_s=DAY)
    assert first[0] == again[0] == 1 and first[1].id == again[1].id  # a retried export keeps its number
    assert reserve_next(store, "digits", local=[], run_id="runB", stale_after_s=DAY)[0] == 2
    assert reserve(store, "digits", 1, run_id="runC", stale_after_s=DAY) is None  # live: refused
    taken = reserve(store, "digits", 1, run_id="runC", stale_after_s=DAY, now=time.time() + 2 * DAY)
    assert taken is not None and taken.run_id == "runC"  # stale: taken over


def test_push_claims_the_number_and_the_commit_releases_it(store: Store, tmp_path: Path) -> None:
    number, _ = reserve_next(store, "digits", local=[], run_id="runA", stale_after_s=DAY)
    ours = _with_run_id(write_version(tmp_path / "a"), "runA")
    theirs = _with_run_id(write_version(tmp_path / "b", seed=3), "runB")
    with pytest.raises(StorageError) as err:
        push_version(store, theirs, "digits", number, create=True)
    message = str(err.value)
    assert f"digits version {number} is taken: reserved by another export" in message and "run runA" in message
    assert "export again" in message and "\n" not in message and not store.list_versions("digits")
    pushed = push_version(store, ours, "digits", number, create=True)
    assert pushed.files_uploaded == 5 and store.committed_versions("digits")[0].version == 1
    assert read_reservation(store, "digits", number) is None  # the manifest is the claim now
    # a directory without a run id claims by content: an interrupted push of it can resume
    plain = write_version(tmp_path / "c", seed=4)
    claim_for_push(store, "digits", 2, run_id=claim_identity(build_manifest(plain, "digits", 2)),
                   stale_after_s=DAY)
    assert push_version(store, plain, "digits", 2, create=True).files_uploaded == 5


def test_gc_removes_stale_and_committed_reservations_only(store: Store, tmp_path: Path) -> None:
    push_version(store, write_version(tmp_path / "a"), "digits", 1, create=True)
    store.put_bytes(reservation_key("digits", 1), Reservation.new("done", now=time.time()).dumps())
    store.put_bytes(reservation_key("digits", 2), Reservation.new("live", now=time.time()).dumps())
    store.put_bytes(reservation_key("digits", 3), Reservation.new("gone", now=time.time() - 2 * DAY).dumps())
    dry = collect_garbage(store, keep=5, grace_s=0, now=time.time(), dry_run=True, reservation_stale_s=DAY)
    assert dry["deleted_reservations"] == ["digits/1", "digits/3"] and len(reservations(store)) == 3
    done = collect_garbage(store, keep=5, grace_s=0, now=time.time(), reservation_stale_s=DAY)
    assert done["deleted_reservations"] == ["digits/1", "digits/3"]
    assert list(reservations(store)) == [("digits", 2)]
    assert [v.version for v in store.committed_versions("digits")] == [1]


def test_ls_shows_reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStore(parse_uri(f"file://{tmp_path}/store"))
    reserve(store, "digits", 4, run_id="run9", stale_after_s=DAY)
    result = CliRunner().invoke(app, ["storage", "ls", "--json"])
    assert result.exit_code == 0, result.stderr
    [entry] = json.loads(result.stdout)["reserved"]
    assert (entry["model"], entry["version"], entry["run_id"], entry["stale"]) == ("digits", 4, "run9", False)
    human = CliRunner().invoke(app, ["storage", "ls"])
    assert "reserved by an export" in human.stdout and "run run9" in human.stdout
