"""The per-version push lock: one push at a time, crashed pushes taken over, on both stores."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import StorageError
from pipeline.storage import Store, open_store
from pipeline.storage.gc import collect_garbage
from pipeline.storage.local import LocalStore
from pipeline.storage.lock import (
    LOCK_PREFIX,
    LockInfo,
    acquire,
    force_unlock,
    is_stale,
    lock_key,
    release,
    take_lease,
)
from pipeline.storage.publish import push_version
from pipeline.storage.uri import parse_uri
from tests.storage.conftest import MotoServer, s3_config, tree_digests, write_version

STALE = 600.0


def test_lock_body_round_trips_and_garbage_reads_as_none() -> None:
    info = LockInfo.new(now=1234.5)
    assert LockInfo.loads(info.dumps()) == info
    assert "pid" in info.owner and len(info.id) == 32
    for junk in (b"", b"{", b"[]", b'{"id": "x"}', b'{"id": "x", "owner": "o", "acquired_at": "soon"}'):
        assert LockInfo.loads(junk) is None


@pytest.mark.parametrize(("age", "stale"), [(0.0, False), (STALE - 1, False), (STALE, True), (STALE * 10, True)])
def test_staleness_is_by_age(age: float, stale: bool) -> None:
    holder = LockInfo(id="a", owner="o", acquired_at=1000.0)
    assert is_stale(holder, 1000.0 + age, STALE) is stale
    assert is_stale(None, 1000.0, STALE)  # unreadable: nobody can be holding it


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(parse_uri(f"file://{tmp_path}/store"))
    moto: MotoServer = request.getfixturevalue("moto")
    return open_store(s3_config(moto, request.getfixturevalue("bucket")))


def _locks(store: Store) -> list[str]:
    return sorted(k for k in store.list_objects(LOCK_PREFIX + "/"))


def test_conditional_writes(store: Store) -> None:
    token = store.put_if_absent("x/lock.json", b"one")
    assert token is not None
    assert store.put_if_absent("x/lock.json", b"two") is None
    data, read_token = store.read_versioned("x/lock.json") or (b"", "")
    assert (data, read_token) == (b"one", token)
    assert store.replace_if("x/lock.json", b"three", "not-the-token") is None
    new_token = store.replace_if("x/lock.json", b"three", token)
    assert new_token is not None and new_token != token
    assert store.get_bytes("x/lock.json") == b"three"
    assert store.read_versioned("x/missing.json") is None


def test_second_pusher_is_refused_with_the_holder_named(store: Store) -> None:
    first, _ = acquire(store, "digits", 3, stale_after_s=STALE)
    with pytest.raises(StorageError) as err:
        acquire(store, "digits", 3, stale_after_s=STALE)
    message = str(err.value)
    assert "another push of digits version 3 is in progress" in message and first.owner in message
    assert "tfrollout storage unlock digits 3" in message and "\n" not in message
    other, _ = acquire(store, "digits", 4, stale_after_s=STALE)  # other versions are independent
    release(store, "digits", 3, first)
    release(store, "digits", 4, other)
    assert _locks(store) == []
    again, _ = acquire(store, "digits", 3, stale_after_s=STALE)
    assert again.id != first.id


def test_stale_lock_is_taken_over_and_the_old_holder_cannot_release_it(store: Store) -> None:
    crashed, _ = acquire(store, "digits", 1, stale_after_s=STALE, now=lambda: 1_000.0)
    taker, _ = acquire(store, "digits", 1, stale_after_s=STALE, now=lambda: 1_000.0 + STALE + 1)
    assert LockInfo.loads(store.get_bytes(lock_key("digits", 1))) == taker
    release(store, "digits", 1, crashed)  # a slow push that lost its lock must not free the new holder's
    assert _locks(store) == [lock_key("digits", 1)]
    release(store, "digits", 1, taker)
    assert _locks(store) == []


def test_unreadable_lock_is_taken_over(store: Store) -> None:
    store.put_bytes(lock_key("digits", 2), b"not json")
    mine, _ = acquire(store, "digits", 2, stale_after_s=STALE)
    assert LockInfo.loads(store.get_bytes(lock_key("digits", 2))) == mine


def test_concurrent_push_of_the_same_version_is_refused_and_the_winner_commits(
        store: Store, tmp_path: Path) -> None:
    winner = write_version(tmp_path / "a", data_size=300_000, seed=1)
    loser = write_version(tmp_path / "b", data_size=300_000, seed=2)
    refused: list[str] = []

    once = threading.Lock()  # S3 reports progress from several transfer threads

    def second_push_mid_upload(n: int) -> None:
        with once:
            if not refused:  # while the first push is uploading
                with pytest.raises(StorageError) as err:
                    push_version(store, loser, "digits", 1, create=True)
                refused.append(str(err.value))

    result = push_version(store, winner, "digits", 1, create=True, on_bytes=second_push_mid_upload)
    assert refused and "is in progress" in refused[0]
    assert result.bytes_uploaded == result.total_bytes
    assert tree_digests(store.pull("digits", 1, tmp_path / "pulled")) == tree_digests(winner)
    assert _locks(store) == []  # released after the commit


def test_failed_push_releases_its_lock(store: Store, tmp_path: Path) -> None:
    vdir = write_version(tmp_path / "a")

    def boom(n: int) -> None:
        raise RuntimeError("client died")

    with pytest.raises((StorageError, RuntimeError)):
        push_version(store, vdir, "digits", 1, create=True, on_bytes=boom)
    assert _locks(store) == []
    assert push_version(store, vdir, "digits", 1, create=True).files_uploaded >= 1


def test_push_without_lock_leaves_no_lock_object(store: Store, tmp_path: Path) -> None:
    push_version(store, write_version(tmp_path / "a"), "digits", 1, create=True, lock_stale_s=None)
    assert _locks(store) == [] and [v.committed for v in store.list_versions()] == [True]


def test_force_unlock_and_cli(tmp_path: Path) -> None:
    store = LocalStore(parse_uri(f"file://{tmp_path}/store"))
    held, _ = acquire(store, "digits", 5, stale_after_s=STALE)
    uri = f"file://{tmp_path}/store"
    result = CliRunner().invoke(app, ["storage", "unlock", "digits", "5", "--uri", uri, "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["removed"] is True and report["holder"] == held.owner
    assert _locks(store) == [] and force_unlock(store, "digits", 5) is None
    again = CliRunner().invoke(app, ["storage", "unlock", "digits", "5", "--uri", uri])
    assert again.exit_code == 0 and "has no push lock" in again.stdout


def test_gc_and_ls_leave_a_live_push_alone_but_not_a_crashed_one(tmp_path: Path, moto: MotoServer,
                                                                  bucket: str) -> None:
    cfg = s3_config(moto, bucket)
    store = open_store(cfg)
    client = moto.client()
    for version in (7, 8):  # two interrupted pushes: a leftover file and an open multipart upload each
        client.put_object(Bucket=bucket, Key=f"models/digits/{version}/variables/variables.index", Body=b"x")
        client.create_multipart_upload(Bucket=bucket, Key=f"models/digits/{version}/variables/big")
    now = time.time()
    acquire(store, "digits", 7, stale_after_s=STALE, now=lambda: now)  # still pushing
    acquire(store, "digits", 8, stale_after_s=STALE, now=lambda: now - STALE - 1)  # crashed long ago
    acquire(store, "digits", 9, stale_after_s=STALE, now=lambda: now)  # just started: nothing stored yet

    uri = ["--uri", cfg.uri, "--set", f"storage.endpoint_url={cfg.endpoint_url}",
           "--set", "storage.addressing_style=path", "--set", f"storage.lock_stale_s={STALE}"]
    listed = CliRunner().invoke(app, ["storage", "ls", "--json", *uri])
    assert listed.exit_code == 0, listed.stderr
    assert [(p["model"], p["version"]) for p in json.loads(listed.stdout)["pushing"]] == [("digits", 7),
                                                                                          ("digits", 9)]
    text = CliRunner().invoke(app, ["storage", "ls", *uri]).stdout
    assert "push in progress by" in text and "(nothing stored yet)" in text

    report = collect_garbage(store, keep=1, grace_s=0.0, now=time.time() + 5, lock_stale_s=STALE)
    assert report["pushing"] == ["digits/7"] and report["deleted_stale"] == ["digits/8"]
    assert report["aborted_uploads"] == 1  # version 8's; version 7's upload is still running
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert uploads == ["models/digits/7/variables/big"]
    assert [v.version for v in store.list_versions("digits")] == [7]


def test_a_renewed_lease_outlives_the_stale_time_and_a_crashed_one_does_not(store: Store) -> None:
    stale = 1.5
    lease = take_lease(store, "digits", 1, stale_after_s=stale)
    time.sleep(stale * 2)  # renewed every stale/3 meanwhile
    with pytest.raises(StorageError, match="is in progress"):
        acquire(store, "digits", 1, stale_after_s=stale)
    assert not lease.lost and (lease.info.renewed_at or 0) > lease.info.acquired_at
    lease.check_held()
    lease._stop.set()  # the pushing process dies: no more renewals, no release
    lease._thread.join()
    later = time.time() + stale * 2  # the taker comes along after the lock went silent
    taker, _ = acquire(store, "digits", 1, stale_after_s=stale, now=lambda: later)
    with pytest.raises(StorageError, match="lost the push lock of digits version 1"):
        lease.check_held()
    lease.release()  # must not delete the taker's lock
    assert LockInfo.loads(store.get_bytes(lock_key("digits", 1))) == taker


def test_a_push_that_lost_its_lock_does_not_commit(store: Store, tmp_path: Path) -> None:
    vdir = write_version(tmp_path / "a", data_size=300_000)
    stolen: list[LockInfo] = []
    once = threading.Lock()  # S3 reports progress from several transfer threads

    def lock_taken_over_mid_upload(n: int) -> None:
        with once:
            if not stolen:
                force_unlock(store, "digits", 1)
                stolen.append(acquire(store, "digits", 1, stale_after_s=STALE)[0])

    with pytest.raises(StorageError, match="lost the push lock") as err:
        push_version(store, vdir, "digits", 1, create=True, on_bytes=lock_taken_over_mid_upload)
    assert stolen[0].owner in str(err.value)
    assert store.committed_versions("digits") == []
    assert LockInfo.loads(store.get_bytes(lock_key("digits", 1))) == stolen[0]  # not released by the loser


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_upload_stops_soon_after_its_lease_is_taken_over(kind: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    mib = 1024 * 1024
    if kind == "local":
        store: Store = LocalStore(parse_uri(f"file://{tmp_path}/store"))
    else:
        store = open_store(s3_config(request.getfixturevalue("moto"), request.getfixturevalue("bucket"),
                                     multipart_threshold=5 * mib, multipart_chunksize=5 * mib,
                                     max_concurrency=1))
    vdir = write_version(tmp_path / "a", data_size=30 * mib)
    sent: list[int] = []
    once = threading.Lock()

    def stolen_then_slow(n: int) -> None:
        with once:
            if not sent:
                force_unlock(store, "digits", 1)
                acquire(store, "digits", 1, stale_after_s=STALE)
                time.sleep(0.5)  # the lease's renewal (every 0.1 s) finds it taken over
            sent.append(n)

    with pytest.raises(StorageError, match="lost the push lock"):
        push_version(store, vdir, "digits", 1, create=True, on_bytes=stolen_then_slow, lock_stale_s=0.3)
    assert sum(sent) < 15 * mib  # stopped well before the 30 MiB file was through
    assert store.committed_versions("digits") == []


class IfMatchOnMissingKeyWrites(LocalStore):
    """A store with MinIO's pre-2025-08 quirk: If-Match on a missing key writes it anyway."""

    def replace_if(self, key: str, data: bytes, token: str) -> str | None:
        if self.read_versioned(key) is None:
            self.put_bytes(key, data)
            return "recreated"
        return super().replace_if(key, data, token)


def test_a_removed_lease_stays_lost_even_where_if_match_on_a_missing_key_writes(tmp_path: Path) -> None:
    store = IfMatchOnMissingKeyWrites(parse_uri(f"file://{tmp_path}/store"))
    lease = take_lease(store, "digits", 1, stale_after_s=STALE)
    lease._stop.set()  # drive renewals by hand
    lease._thread.join()
    lease.renew()
    assert not lease.lost
    force_unlock(store, "digits", 1)
    lease.renew()
    assert lease.lost and store.read_versioned(lock_key("digits", 1)) is None
    with pytest.raises(StorageError, match="lost the push lock"):
        lease.check_held()


def test_a_killed_push_on_this_machine_does_not_block_the_next_one(tmp_path: Path) -> None:
    """kill -9 during a push: the same machine pushes again at once, not after lock_stale_s."""
    import subprocess
    import sys

    root = tmp_path / "store"
    root.mkdir()
    script = ("import os, sys\n"
              "from pipeline.storage.local import LocalStore\n"
              "from pipeline.storage.lock import acquire\n"
              "from pipeline.storage.uri import parse_uri\n"
              f"acquire(LocalStore(parse_uri('file://{root}')), 'digits', 7, stale_after_s=1800)\n"
              "os._exit(9)  # dies holding the lock, as a killed push does\n")
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    store = LocalStore(parse_uri(f"file://{root}"))
    left = LockInfo.loads(store.get_bytes(lock_key("digits", 7)))
    assert left is not None and left.crashed_here() and is_stale(left, left.acquired_at, 1800)
    mine, _ = acquire(store, "digits", 7, stale_after_s=1800)  # no 30-minute wait
    assert LockInfo.loads(store.get_bytes(lock_key("digits", 7))) == mine and not mine.crashed_here()

    from dataclasses import replace

    elsewhere = replace(left, hostname="another-host")  # a dead pid on another machine proves nothing here
    assert not elsewhere.crashed_here() and not is_stale(elsewhere, elsewhere.acquired_at, 1800)
