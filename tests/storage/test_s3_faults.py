"""Interrupted pushes against a real S3 server process: nothing half-written is ever visible.

1. The S3 server process is SIGKILLed mid-upload: the push fails with one line, nothing is
   committed; moto keeps state in memory, so after a restart we simulate the survivors by
   pre-uploading part of the files, and the re-run skips them and commits.
2. The client dies mid-push while the server stays up: `ls` shows the version uncommitted,
   and the re-run skips exactly the files that had completed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.storage import UploadItem, open_store
from pipeline.storage.manifest import scan_dir
from pipeline.storage.publish import push_version
from tests.storage.conftest import MotoServer, s3_config, start_moto, tree_digests, write_version

MiB = 1024 * 1024
BIG = "variables/variables.data-00000-of-00001"


def _fault_version(tmp_path: Path) -> Path:
    """A multipart-sized variables file plus a second shard so some files finish before others."""
    return write_version(tmp_path / "exports", data_size=16 * MiB,
                         extra={"variables/variables.data-00001-of-00002": 2 * MiB})


def test_server_killed_mid_push_then_resume(tmp_path: Path) -> None:
    server = start_moto()
    try:
        server.client().create_bucket(Bucket="models")
        cfg = s3_config(server, "models", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                        max_concurrency=2, max_attempts=2, connect_timeout_s=0.5)
        vdir = _fault_version(tmp_path)
        sent = [0]
        killed = threading.Event()
        lock = threading.Lock()

        def kill_after_6_mib(n: int) -> None:
            with lock:
                sent[0] += n
                if sent[0] >= 6 * MiB and not killed.is_set():
                    killed.set()
                    server.kill()

        with pytest.raises(StorageError) as err:
            push_version(open_store(cfg), vdir, "digits", 1, on_bytes=kill_after_6_mib)
        message = str(err.value)
        assert killed.is_set()
        assert "interrupted after" in message and "nothing was committed" in message and "\n" not in message
        assert "cannot reach S3 endpoint" in message or "S3 failure" in message

        # moto lost its memory with the process: restart on the same port and re-create what
        # "survived" — the two variables shards completed before the crash.
        server.start()
        server.client().create_bucket(Bucket="models")
        store = open_store(cfg)
        entries = {e.path: e for e in scan_dir(vdir)}
        survivors = [BIG, "variables/variables.data-00001-of-00002"]
        store.upload([[UploadItem(vdir / p, f"digits/1/{p}", entries[p].size, entries[p].sha256)
                      for p in survivors]], lambda n: None)
        assert store.committed_versions("digits") == []  # listed, but not committed: no manifest
        assert [v.committed for v in store.list_versions("digits")] == [False]

        result = push_version(store, vdir, "digits", 1)
        survived = sum(entries[p].size for p in survivors)
        assert result.bytes_skipped == survived == 18 * MiB and result.files_skipped == 2
        assert result.bytes_uploaded == result.total_bytes - survived
        pulled = store.pull("digits", 1, tmp_path / "pulled")
        assert tree_digests(pulled) == tree_digests(vdir)
    finally:
        server.stop()


def test_client_crash_mid_push_resumes_skipping_completed_files(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    cfg = s3_config(moto, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1)
    store = open_store(cfg)
    vdir = _fault_version(tmp_path)

    class Crash(Exception):
        pass

    entries = {e.path: e for e in scan_dir(vdir)}
    total = sum(e.size for e in entries.values())
    sent = [0]

    def crash_mid_first_batch(n: int) -> None:
        sent[0] += n
        if sent[0] > 16 * MiB + 256 * 1024:  # variables still in flight, saved_model.pb not started
            raise Crash("client died")

    with pytest.raises(StorageError, match="interrupted after"):
        push_version(store, vdir, "digits", 1, on_bytes=crash_mid_first_batch)
    [info] = store.list_versions("digits")
    assert not info.committed and store.committed_versions("digits") == []
    assert moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted
    survivors = {k.split("/", 2)[2]: o.size for k, o in store.list_objects("digits/1/").items()}
    assert "saved_model.pb" not in survivors and sum(survivors.values()) < total
    assert all(entries[p].size == size for p, size in survivors.items())  # objects are all-or-nothing

    resent: list[int] = []
    result = push_version(store, vdir, "digits", 1, on_bytes=resent.append)
    assert result.files_skipped == len(survivors) and result.bytes_skipped == sum(survivors.values())
    assert result.bytes_uploaded == sum(resent) == total - result.bytes_skipped
    assert tree_digests(store.pull("digits", 1, tmp_path / "pulled")) == tree_digests(vdir)
