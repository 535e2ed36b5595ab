"""S3 store against a real moto_server process over HTTP (no in-process mocking)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import StorageError
from pipeline.storage import MANIFEST_NAME, open_store
from pipeline.storage.gc import collect_garbage
from pipeline.storage.publish import push_version
from tests.storage.conftest import MotoServer, s3_config, tree_digests, write_version

MiB = 1024 * 1024


def _etags(server: MotoServer, bucket: str) -> dict[str, str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for p in pages for o in p.get("Contents", [])}


def test_multipart_round_trip_is_byte_identical(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    cfg = s3_config(moto, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    store = open_store(cfg)
    vdir = write_version(tmp_path / "exports", data_size=12 * MiB + 123)
    sent: list[int] = []
    result = push_version(store, vdir, "digits", 1, on_bytes=sent.append)
    assert result.bytes_uploaded == sum(sent) == result.total_bytes
    assert result.uri == f"s3://{bucket}/models/digits/1/"
    client = moto.client()
    head = client.head_object(Bucket=bucket, Key="models/digits/1/variables/variables.data-00000-of-00001")
    assert re.search(r"-3\"?$", head["ETag"]), head["ETag"]  # 5 + 5 + 2 MiB parts: multipart was used
    assert head["Metadata"]["sha256"] == store.sha256_of("digits/1/variables/variables.data-00000-of-00001")
    small = client.head_object(Bucket=bucket, Key="models/digits/1/saved_model.pb")
    assert "-" not in small["ETag"]
    [info] = store.list_versions()
    assert info.committed and info.files == 5 and info.bytes == result.total_bytes
    pulled = store.pull("digits", None, tmp_path / "pulled" / "digits" / "1")
    assert tree_digests(pulled) == tree_digests(vdir)


def test_repush_unchanged_uploads_zero_bytes(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1)
    before = _etags(moto, bucket)
    sent: list[int] = []
    again = push_version(store, vdir, "digits", 1, on_bytes=sent.append)
    assert again.already_committed and again.bytes_uploaded == 0 and sum(sent) == 0
    assert again.bytes_skipped == again.total_bytes and _etags(moto, bucket) == before


def test_different_content_refused_without_force_and_store_intact(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    first = write_version(tmp_path / "a")
    push_version(store, first, "digits", 1)
    before = _etags(moto, bucket)
    manifest_before = store.get_bytes(f"digits/1/{MANIFEST_NAME}")
    second = write_version(tmp_path / "b", seed=42)
    with pytest.raises(StorageError, match="already committed with different content"):
        push_version(store, second, "digits", 1)
    assert _etags(moto, bucket) == before
    assert store.get_bytes(f"digits/1/{MANIFEST_NAME}") == manifest_before
    assert tree_digests(store.pull("digits", 1, tmp_path / "p1")) == tree_digests(first)
    push_version(store, second, "digits", 1, force=True)
    assert tree_digests(store.pull("digits", 1, tmp_path / "p2")) == tree_digests(second)


def test_pull_detects_tampered_object_and_leaves_no_directory(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1)
    key = "models/digits/1/variables/variables.index"
    original = (vdir / "variables" / "variables.index").read_bytes()
    sha = store.sha256_of("digits/1/variables/variables.index")
    # a copy that keeps the bytes and the recorded sha256 (as `aws s3 sync` does) stays committed
    moto.client().put_object(Bucket=bucket, Key=key, Body=original, Metadata={"sha256": sha})
    assert [v.committed for v in store.list_versions()] == [True]
    moto.client().put_object(Bucket=bucket, Key=key, Body=bytes(b ^ 1 for b in original))
    [info] = store.list_versions()  # issue 27: the ETag changed, so the recorded sha256 is checked
    assert not info.committed and info.problems == [
        "variables/variables.index: rewritten since the commit and its sha256 is not recorded"]
    dest = tmp_path / "out" / "1"
    with pytest.raises(StorageError, match="checksum mismatch|not committed"):
        store.pull("digits", 1, dest)
    assert not dest.exists() and not any((tmp_path / "out").glob("*"))


def test_uncommitted_version_is_listed_but_not_readable(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    moto.client().put_object(Bucket=bucket, Key="models/digits/7/variables/variables.index", Body=b"x")
    [info] = store.list_versions("digits")
    assert (info.version, info.committed) == (7, False)
    assert store.committed_versions("digits") == []
    with pytest.raises(StorageError, match="not committed"):
        store.pull("digits", 7, tmp_path / "p")


def test_gc_on_s3_keeps_newest_and_aborts_stale_multipart(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    for v in (1, 2, 3):
        push_version(store, write_version(tmp_path / "e", version=v, seed=v), "digits", v)
    client = moto.client()
    client.put_object(Bucket=bucket, Key="models/digits/9/variables/variables.index", Body=b"leftover")
    client.create_multipart_upload(Bucket=bucket, Key="models/digits/9/variables/big")
    import time

    report = collect_garbage(store, keep=1, grace_s=0.0, now=time.time() + 5)
    assert report["deleted_committed"] == ["digits/1", "digits/2"]
    assert report["deleted_stale"] == ["digits/9"] and report["aborted_uploads"] == 1
    assert [(v.version, v.committed) for v in store.list_versions()] == [(3, True)]
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_missing_bucket_is_a_clear_error_and_create_bucket_fixes_it(tmp_path: Path, moto: MotoServer) -> None:
    vdir = write_version(tmp_path / "exports")
    store = open_store(s3_config(moto, "no-such-bucket-here"))
    with pytest.raises(StorageError) as err:
        push_version(store, vdir, "digits", 1)
    message = str(err.value)
    assert "'no-such-bucket-here' does not exist" in message and "--create-bucket" in message
    assert "\n" not in message
    result = push_version(store, vdir, "digits", 1, create=True)
    assert result.bytes_uploaded == result.total_bytes
    moto_buckets = [b["Name"] for b in moto.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-here" in moto_buckets


def _capture_upload_headers(store) -> list[dict[str, str]]:  # noqa: ANN001 - an S3Store
    """Record the headers of every PutObject/UploadPart request the store's client sends."""
    seen: list[dict[str, str]] = []

    def record(request, **_: object) -> None:  # noqa: ANN001 - botocore AWSPreparedRequest
        seen.append({k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()})

    for op in ("PutObject", "UploadPart"):
        store.client.meta.events.register(f"before-send.s3.{op}", record)
    return seen


def test_bodies_carry_a_crc32_and_skip_the_sha256_signature_by_default(
        tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    seen = _capture_upload_headers(store)
    vdir = write_version(tmp_path / "exports", data_size=6 * MiB)
    push_version(store, vdir, "digits", 1)
    assert len(seen) >= 6  # 2 parts + 4 small files + manifest
    assert all(h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" for h in seen)
    bodies = [h for h in seen if h.get("content-type") != "application/json"]  # not the manifest
    assert bodies and all(re.fullmatch(r"[A-Za-z0-9+/]{6}==", h.get("x-amz-checksum-crc32", "")) for h in bodies)
    pulled = store.pull("digits", None, tmp_path / "pulled")
    assert tree_digests(pulled) == tree_digests(vdir)


def test_sign_payload_true_signs_every_body_with_its_sha256(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket, sign_payload=True))
    seen = _capture_upload_headers(store)
    vdir = write_version(tmp_path / "exports")
    push_version(store, vdir, "digits", 1)
    expected = tree_digests(vdir)["saved_model.pb"]
    signed = [h["x-amz-content-sha256"] for h in seen]
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in signed) and expected in signed


def test_pulling_one_version_lists_only_that_version(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    store = open_store(s3_config(moto, bucket))
    for version in (1, 2, 3):
        push_version(store, write_version(tmp_path / "e", version=version, seed=version), "digits", version)
    prefixes: list[str] = []
    manifests: list[str] = []
    store.client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                      lambda params, **_: prefixes.append(params["Prefix"]))
    store.client.meta.events.register("before-parameter-build.s3.GetObject",
                                      lambda params, **_: manifests.append(params["Key"]))
    dest = store.pull("digits", 2, tmp_path / "pulled")
    assert prefixes == ["models/digits/2/"]
    assert manifests.count("models/digits/2/tfrollout.manifest.json") == 1
    assert not any(k.startswith(("models/digits/1/", "models/digits/3/")) for k in manifests)
    assert tree_digests(dest) == tree_digests(tmp_path / "e" / "digits" / "2")
    assert [v.version for v in store.list_versions("digits")] == [1, 2, 3]
