"""file:// store: push → ls → pull round trip, resume, immutability, gc, corrupted pulls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import StorageConfig
from pipeline.errors import StorageError
from pipeline.storage import MANIFEST_NAME, open_store
from pipeline.storage.gc import collect_garbage
from pipeline.storage.publish import push_version
from tests.storage.conftest import tree_digests, write_version


@pytest.fixture
def store(tmp_path: Path):  # noqa: ANN201
    return open_store(StorageConfig(uri="file://store"), cwd=tmp_path)


def test_round_trip_is_byte_identical(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports")
    result = push_version(store, vdir, "digits", 1, create=True)
    assert result.bytes_uploaded == result.total_bytes > 0 and result.files_uploaded == 5
    assert (tmp_path / "store" / "digits" / "1" / MANIFEST_NAME).is_file()
    assert not any((tmp_path / "store" / ".tmp").iterdir())
    [info] = store.list_versions()
    assert info.committed and info.bytes == result.total_bytes and info.manifest.export["signature"]
    dest = store.pull("digits", 1, tmp_path / "pulled")
    assert tree_digests(dest) == tree_digests(vdir)


def test_repush_unchanged_sends_zero_bytes(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1, create=True)
    sent: list[int] = []
    again = push_version(store, vdir, "digits", 1, create=True, on_bytes=sent.append)
    assert again.already_committed and again.bytes_uploaded == 0 and sum(sent) == 0
    assert again.files_skipped == 5


def test_different_content_is_refused_without_force(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "a")
    push_version(store, vdir, "digits", 1, create=True)
    before = tree_digests(tmp_path / "store" / "digits" / "1", exclude=())
    other = write_version(tmp_path / "b", seed=7)
    with pytest.raises(StorageError, match="already committed with different content"):
        push_version(store, other, "digits", 1, create=True)
    assert tree_digests(tmp_path / "store" / "digits" / "1", exclude=()) == before
    forced = push_version(store, other, "digits", 1, create=True, force=True)
    assert not forced.already_committed and forced.bytes_uploaded > 0
    assert tree_digests(store.pull("digits", 1, tmp_path / "p")) == tree_digests(other)


def test_interrupted_push_is_invisible_then_resumes(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports", data_size=3_000_000)

    class Crash(Exception):
        pass

    seen = [0]

    def crash_after_first_mb(n: int) -> None:  # the data file is copied first, then the crash
        seen[0] += n
        if seen[0] > 3_000_100:
            raise Crash("simulated crash")

    with pytest.raises(Crash):
        push_version(store, vdir, "digits", 1, create=True, on_bytes=crash_after_first_mb)
    [info] = store.list_versions()
    assert not info.committed and "no manifest" in info.problems[0]
    with pytest.raises(StorageError, match="not committed"):
        store.pull("digits", 1, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    # The half-copied file never appeared under its final name (temp + rename).
    assert not (tmp_path / "store" / "digits" / "1" / "variables" / "variables.index").exists()
    assert (tmp_path / "store" / "digits" / "1" / "variables" / "variables.data-00000-of-00001").is_file()
    done = push_version(store, vdir, "digits", 1, create=True)
    assert store.committed_versions("digits")[0].version == 1
    assert done.bytes_skipped == 3_000_000 and done.bytes_uploaded == done.total_bytes - 3_000_000


def test_resume_skips_files_already_present(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports", data_size=500_000)
    root = tmp_path / "store" / "digits" / "1" / "variables"
    root.mkdir(parents=True)
    data = vdir / "variables" / "variables.data-00000-of-00001"
    (root / data.name).write_bytes(data.read_bytes())
    (root / "variables.index").write_bytes(b"wrong content, wrong size")
    result = push_version(store, vdir, "digits", 1, create=True)
    assert result.bytes_skipped == 500_000 and result.files_skipped == 1
    assert result.bytes_uploaded == result.total_bytes - 500_000
    assert tree_digests(store.pull("digits", 1, tmp_path / "p")) == tree_digests(vdir)


def test_pull_with_corrupted_file_fails_and_leaves_nothing(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1, create=True)
    stored = tmp_path / "store" / "digits" / "1" / "variables" / "variables.index"
    original = stored.read_bytes()
    stored.write_bytes(original)  # rewritten (new mtime), same bytes: still committed
    os.utime(stored, ns=(stored.stat().st_atime_ns, stored.stat().st_mtime_ns + 10**9))
    assert store.list_versions()[0].committed
    stored.write_bytes(bytes(b ^ 0xFF for b in original))  # same size, different bytes
    [info] = store.list_versions()  # issue 27: the listing's token changed, so the bytes are checked
    assert not info.committed and info.problems == [
        "variables/variables.index: rewritten since the commit and its sha256 differs"]
    with pytest.raises(StorageError, match="checksum mismatch|not committed"):
        store.pull("digits", 1, tmp_path / "out" / "digits" / "1")
    assert not (tmp_path / "out" / "digits" / "1").exists()
    assert not any((tmp_path / "out" / "digits").glob("*"))


def test_missing_file_uncommits_version_for_readers(tmp_path: Path, store) -> None:  # noqa: ANN001
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1, create=True)
    (tmp_path / "store" / "digits" / "1" / "saved_model.pb").unlink()
    assert store.committed_versions("digits") == []
    assert "missing saved_model.pb" in store.list_versions()[0].problems


def test_gc_keeps_newest_and_drops_stale_leftovers(tmp_path: Path, store) -> None:  # noqa: ANN001
    for v in (1, 2, 3):
        push_version(store, write_version(tmp_path / "e", version=v, seed=v), "digits", v, create=True)
    leftover = tmp_path / "store" / "digits" / "4" / "variables" / "variables.index"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half")
    young = tmp_path / "store" / "digits" / "5" / "saved_model.pb"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"in progress")
    old = 1_000_000.0
    os.utime(leftover, (old, old))
    half_copied = tmp_path / "store" / ".tmp" / "deadbeef"
    half_copied.write_bytes(b"partial")
    os.utime(half_copied, (old, old))
    report = collect_garbage(store, keep=2, grace_s=3600, now=os.path.getmtime(young) + 1)
    assert report["deleted_committed"] == ["digits/1"] and report["deleted_stale"] == ["digits/4"]
    assert report["aborted_uploads"] == 1 and not half_copied.exists()
    left = {(v.version, v.committed) for v in store.list_versions()}
    assert left == {(2, True), (3, True), (5, False)}
    assert not (tmp_path / "store" / "digits" / "1").exists()


def test_saved_model_pb_then_manifest_are_written_last(tmp_path: Path, store) -> None:  # noqa: ANN001
    """A poller (TF Serving, rollout) must never see the graph before its variables, nor a commit early."""
    order: list[str] = []
    upload, put_bytes = store.upload, store.put_bytes

    def spy_upload(batches, on_bytes):  # noqa: ANN001, ANN202
        order.extend(i.key for batch in batches for i in batch)
        assert [i.key for i in batches[-1]] == ["digits/1/saved_model.pb"]  # its own, last batch
        return upload(batches, on_bytes)

    def spy_put(key, data):  # noqa: ANN001, ANN202
        order.append(key)
        return put_bytes(key, data)

    store.upload, store.put_bytes = spy_upload, spy_put
    push_version(store, write_version(tmp_path / "exports"), "digits", 1, create=True)
    assert order[-2:] == ["digits/1/saved_model.pb", f"digits/1/{MANIFEST_NAME}"]
    assert order[0].startswith("digits/1/variables/") and len(order) == 6
