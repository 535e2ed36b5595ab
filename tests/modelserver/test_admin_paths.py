"""The admin API's base-path check (`--model_base_path_prefix`): one normaliser, local or URL by an
explicit scheme list, local paths resolved (realpath) before the prefix check — issue 27 (5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving import tfs_config
from serving.modelserver.admin import ReloadGuard, normalise, parse_roots, scheme_of
from serving.modelserver.errors import ServingError


def _config(base_path: str):
    return tfs_config.parse_model_server_config(
        f'model_config_list {{ config {{ name: "digits" base_path: "{base_path}" }} }}')


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root holding a directory named `a:` (as the attack needs), a model outside it."""
    root = tmp_path / "models"
    (root / "a:" / "b").mkdir(parents=True)
    evil = tmp_path / "evil" / "digits" / "1"
    evil.mkdir(parents=True)
    (evil / "saved_model.pb").write_bytes(b"")
    return root, tmp_path / "evil" / "digits"


def test_a_local_path_with_a_colon_slash_slash_is_resolved_as_local_and_refused(layout):
    root, evil = layout
    trick = f"{root}/a://b/../../../evil/digits"
    assert os.path.realpath(trick) == str(evil)  # what the loader would open: outside the root
    guard = ReloadGuard(parse_roots(str(root)))
    with pytest.raises(ServingError, match=r"is outside the allowed roots") as err:
        guard.check(_config(trick))
    assert str(evil) in str(err.value)  # the resolved path is named


def test_symlinks_and_dotdot_are_resolved_before_the_prefix_check(layout):
    root, evil = layout
    (root / "link").symlink_to(evil.parent)
    guard = ReloadGuard(parse_roots(str(root)))
    for path in (f"{root}/link/digits", f"{root}/../evil/digits", f"file://{root}/../evil/digits"):
        with pytest.raises(ServingError, match="outside the allowed roots"):
            guard.check(_config(path))
    (root / "digits").mkdir()
    guard.check(_config(f"{root}/./digits"))  # inside: accepted


def test_urls_only_by_known_scheme():
    assert scheme_of("s3://bucket/m") == "s3" and scheme_of("/x/a://b") is None and scheme_of("GS://b") == "gs"
    assert normalise("s3://bucket/m/../../other") == "s3://bucket/other"  # a `..` never leaves the bucket
    guard = ReloadGuard(parse_roots("s3://bucket/models"))
    guard.check(_config("s3://bucket/models/digits"))
    with pytest.raises(ServingError, match="outside the allowed roots"):
        guard.check(_config("s3://bucket/models/../secrets/digits"))
    with pytest.raises(ServingError, match=r"scheme 'foo' is not one this server opens"):
        guard.check(_config("foo://bucket/models/digits"))
