"""Pure cores of the storage layer: URIs, manifests, push plans, gc selection, error text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import StorageError
from pipeline.storage.base import ObjectInfo, VersionInfo
from pipeline.storage.errors import redact, translate
from pipeline.storage.gc import select_gc
from pipeline.storage.manifest import (
    MANIFEST_NAME,
    FileEntry,
    VersionManifest,
    check_listing,
    upload_order,
)
from pipeline.storage.publish import plan_push
from pipeline.storage.scan import group_versions, judge, split_key
from pipeline.storage.uri import parse_uri

# ------------------------------------------------------------------ uri


def test_parse_s3_and_file_uris(tmp_path: Path) -> None:
    s3 = parse_uri("s3://my-bucket/a/b/")
    assert (s3.scheme, s3.bucket, s3.prefix) == ("s3", "my-bucket", "a/b")
    assert s3.join("m", "3") == "s3://my-bucket/a/b/m/3"
    assert parse_uri("s3://my-bucket").prefix == ""
    rel = parse_uri("file://store", cwd=tmp_path)
    assert rel.path == (tmp_path / "store").resolve()
    absolute = parse_uri(f"file://{tmp_path}/x")
    assert absolute.path == (tmp_path / "x").resolve()


@pytest.mark.parametrize("bad", ["gs://b/x", "store", "s3://Bad_Bucket/x", "s3:///x", "file://"])
def test_bad_uris_are_one_line_errors(bad: str) -> None:
    with pytest.raises(StorageError) as err:
        parse_uri(bad)
    assert "\n" not in str(err.value) and "storage.uri" in str(err.value)


# ------------------------------------------------------------------ manifest


def _manifest(files: dict[str, tuple[int, str]], version: int = 1) -> VersionManifest:
    return VersionManifest("m", version, [FileEntry(p, s, h) for p, (s, h) in files.items()])


def test_saved_model_pb_is_uploaded_last_and_variables_first() -> None:
    first, last = upload_order(["saved_model.pb", "assets.extra/w", "variables/variables.index",
                                "tfrollout.json", "variables/variables.data-00000-of-00001"])
    assert last == ["saved_model.pb"]
    assert first[:2] == ["variables/variables.data-00000-of-00001", "variables/variables.index"]
    assert set(first) == {"assets.extra/w", "tfrollout.json", "variables/variables.index",
                          "variables/variables.data-00000-of-00001"}


def test_manifest_round_trip_and_rejects_escaping_paths() -> None:
    m = _manifest({"saved_model.pb": (3, "a" * 64), "variables/v.index": (1, "b" * 64)})
    again = VersionManifest.loads(m.dumps())
    assert again.same_content(m) and again.total_bytes == 4
    bad = m.dumps().replace(b"variables/v.index", b"../../etc/passwd")
    with pytest.raises(StorageError, match="unreadable store manifest"):
        VersionManifest.loads(bad)


def test_check_listing_reports_missing_and_wrong_size() -> None:
    m = _manifest({"a": (3, "x"), "b": (5, "y")})
    assert check_listing(m, {"a": 3, "b": 5}) == []
    assert check_listing(m, {"a": 3}) == ["missing b"]
    assert check_listing(m, {"a": 4, "b": 5}) == ["a: size 4 != 3"]


# ------------------------------------------------------------------ scan / commit rule


def _obj(key: str, size: int, mtime: float = 100.0) -> ObjectInfo:
    return ObjectInfo(key, size, mtime)


def test_split_key_ignores_foreign_keys() -> None:
    assert split_key("m/3/variables/x") == ("m", 3, "variables/x")
    assert split_key("m/latest/x") is None
    assert split_key(".tmp/abc/x") is None
    assert split_key("m/3") is None


def test_version_is_committed_only_with_manifest_and_all_files() -> None:
    m = _manifest({"saved_model.pb": (3, "x"), "variables/v": (5, "y")}, version=2)
    full = {"saved_model.pb": _obj("k", 3), "variables/v": _obj("k", 5), MANIFEST_NAME: _obj("k", 9)}
    assert judge("m", 2, full, m, [], "u").committed
    partial = {k: v for k, v in full.items() if k != "variables/v"}
    assert not judge("m", 2, partial, m, [], "u").committed
    assert not judge("m", 2, full, None, [], "u").committed
    assert not judge("m", 3, full, m, [], "u").committed  # manifest of another version
    info = judge("m", 2, full, m, [], "u")
    assert (info.files, info.bytes) == (2, 8)


def test_group_versions() -> None:
    groups = group_versions({"a/1/x": _obj("a/1/x", 1), "a/2/x": _obj("a/2/x", 2), "b/1/y": _obj("b/1/y", 3),
                             "junk": _obj("junk", 1)})
    assert sorted(groups) == [("a", 1), ("a", 2), ("b", 1)]
    assert groups[("b", 1)]["y"].size == 3


# ------------------------------------------------------------------ push plan

LOCAL = _manifest({"saved_model.pb": (3, "s"), "variables/v.data": (10, "d"), "variables/v.index": (2, "i")})


def test_plan_fresh_version_uploads_everything_in_order() -> None:
    plan = plan_push(LOCAL, {}, {}, None, force=False)
    assert [e.path for e in plan.first] == ["variables/v.data", "variables/v.index"]
    assert [e.path for e in plan.last] == ["saved_model.pb"]
    assert plan.upload_bytes == 15 and not plan.uncommit


def test_plan_resume_skips_files_with_matching_size_and_checksum() -> None:
    remote = {"variables/v.data": _obj("", 10), "variables/v.index": _obj("", 2), "stale.bin": _obj("", 1)}
    plan = plan_push(LOCAL, remote, {"variables/v.data": "d", "variables/v.index": "WRONG"}, None, force=False)
    assert [e.path for e in plan.skip] == ["variables/v.data"]
    assert {e.path for e in plan.first + plan.last} == {"variables/v.index", "saved_model.pb"}
    assert plan.extraneous == ["stale.bin"]


def test_plan_identical_committed_version_uploads_nothing() -> None:
    remote = {e.path: _obj("", e.size) for e in LOCAL.files} | {MANIFEST_NAME: _obj("", 1)}
    plan = plan_push(LOCAL, remote, {}, LOCAL, force=False)
    assert plan.already_committed and plan.upload_bytes == 0


def test_plan_refuses_different_content_unless_forced() -> None:
    remote = {e.path: _obj("", e.size) for e in LOCAL.files} | {MANIFEST_NAME: _obj("", 1)}
    other = _manifest({"saved_model.pb": (3, "OTHER"), "variables/v.data": (10, "d"),
                       "variables/v.index": (2, "i")})
    with pytest.raises(StorageError, match="version 1 is taken: already committed with different content "
                       r"\(1 files differ\).*export again and the export picks a fresh version number") as err:
        plan_push(other, remote, {}, LOCAL, force=False)
    assert "--force" not in str(err.value)  # never advise overwriting a committed (maybe served) version
    plan = plan_push(other, remote, {"variables/v.data": "d", "variables/v.index": "i"}, LOCAL, force=True)
    assert plan.uncommit and [e.path for e in plan.last] == ["saved_model.pb"] and not plan.first


def test_plan_uncommitted_manifest_is_removed_before_resuming() -> None:
    remote = {"variables/v.data": _obj("", 10), MANIFEST_NAME: _obj("", 1)}  # files missing: not committed
    plan = plan_push(LOCAL, remote, {"variables/v.data": "d"}, LOCAL, force=False)
    assert plan.uncommit and not plan.already_committed and plan.upload_bytes == 5


@given(st.dictionaries(st.sampled_from(["saved_model.pb", "variables/v.data", "variables/v.index"]),
                       st.tuples(st.integers(0, 20), st.sampled_from(["s", "d", "i", "z"]))))
def test_plan_property_every_file_is_uploaded_or_skipped_exactly_once(remote_files: dict) -> None:
    remote = {p: _obj("", size) for p, (size, _) in remote_files.items()}
    sha = {p: h for p, (_, h) in remote_files.items()}
    plan = plan_push(LOCAL, remote, sha, None, force=False)
    moved = [e.path for e in plan.first + plan.last]
    skipped = [e.path for e in plan.skip]
    assert sorted(moved + skipped) == sorted(e.path for e in LOCAL.files)
    for entry in plan.skip:
        assert remote[entry.path].size == entry.size and sha[entry.path] == entry.sha256
    if "saved_model.pb" in moved:
        assert plan.last and plan.last[-1].path == "saved_model.pb"


# ------------------------------------------------------------------ gc


def _v(model: str, version: int, committed: bool, mtime: float = 0.0) -> VersionInfo:
    return VersionInfo(model, version, committed, 1, 10, mtime, "u")


def test_gc_keeps_newest_committed_and_young_leftovers() -> None:
    versions = [_v("a", 1, True), _v("a", 2, True), _v("a", 3, True), _v("a", 4, False, mtime=990.0),
                _v("a", 5, False, mtime=10.0), _v("b", 1, True)]
    plan = select_gc(versions, keep=2, grace_s=100.0, now=1000.0)
    ids = lambda vs: sorted((v.model, v.version) for v in vs)  # noqa: E731
    assert ids(plan.old) == [("a", 1)]
    assert ids(plan.stale) == [("a", 5)]
    assert ids(plan.kept) == [("a", 2), ("a", 3), ("a", 4), ("b", 1)]


def test_gc_never_touches_a_version_being_pushed() -> None:
    versions = [_v("a", 1, True), _v("a", 2, True), _v("a", 3, True), _v("a", 5, False, mtime=10.0)]
    plan = select_gc(versions, keep=1, grace_s=100.0, now=1000.0, pushing={("a", 5), ("a", 1)})
    ids = lambda vs: sorted((v.model, v.version) for v in vs)  # noqa: E731
    assert ids(plan.busy) == [("a", 1), ("a", 5)]  # an old leftover and a committed one, both locked
    assert ids(plan.old) == [("a", 2)] and ids(plan.stale) == [] and ids(plan.kept) == [("a", 3)]
    assert plan.to_json()["pushing"] == ["a/1", "a/5"]


# ------------------------------------------------------------------ errors


def test_redact_removes_secrets_userinfo_and_newlines() -> None:
    text = "failed at http://user:pw@host:9000/x with secret=abc123 key AKIASECRETVALUE\nmore"
    out = redact(text, ["AKIASECRETVALUE"])
    assert "pw" not in out and "abc123" not in out and "AKIASECRETVALUE" not in out and "\n" not in out


def test_translate_maps_error_codes_to_actionable_lines() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}}, "ListObjectsV2")

    kw = {"action": "listing", "where": "http://127.0.0.1:1", "bucket": "b", "attempts": 3, "secrets": []}
    assert "does not exist" in str(translate(client_error("NoSuchBucket"), **kw))
    assert "--create-bucket" in str(translate(client_error("NoSuchBucket"), **kw))
    assert "access denied" in str(translate(client_error("AccessDenied"), **kw))
    assert "rejected the credentials" in str(translate(client_error("InvalidAccessKeyId"), **kw))
    unreachable = str(translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), **kw))
    assert "cannot reach S3 endpoint" in unreachable and "3 attempts" in unreachable


@pytest.mark.parametrize(("checksum", "sign", "expected"), [
    ("CRC32", None, False),   # default: the checksum protects the body, like botocore over HTTPS
    ("SHA256", None, False),
    ("none", None, None),     # no checksum: botocore's own rule (signed over plain HTTP)
    ("CRC32", True, True),
    ("none", False, False),
])
def test_payload_signing_follows_the_transport_checksum(checksum: str, sign: bool | None,
                                                        expected: bool | None) -> None:
    from pipeline.config import StorageConfig
    from pipeline.storage.s3 import s3_options

    options = s3_options(StorageConfig(uri="s3://b/p", checksum_algorithm=checksum, sign_payload=sign,
                                       addressing_style="path"))
    assert options.get("payload_signing_enabled") is expected
    assert options["addressing_style"] == "path"
