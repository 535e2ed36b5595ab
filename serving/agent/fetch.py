"""One version into the models directory, every byte proven against the pinned manifest first.

Why staged: a version is written to a hidden, non-numeric directory private to this process and
renamed to `<model>/<version>` only after every file matched, so a server polling the directory
never sees half a version, and two fetchers on one shared volume never mix their bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

from .common import AgentError
from .manifest import MANIFEST_NAME, parse_manifest
from .s3 import Fetcher, store_key


def fetch_version(spec: dict[str, Any], creds: dict[str, str] | None) -> str:
    """Download the pinned version into <models_dir>/<model>/<version>, every byte verified."""
    model, version, store = spec["model"], int(spec["version"]), spec["store"]
    final = os.path.join(spec["models_dir"], model, str(version))
    if os.path.isdir(final):
        return final
    fetcher = Fetcher(store, creds)
    data = fetcher.read(store_key(store, model, version, MANIFEST_NAME))
    want = spec.get("manifest_sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise AgentError(f"store manifest of {model} version {version} changed since the rollout was planned "
                         f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}… != {want[:16]}…)")
    # private to this process: a shared volume may have two fetchers of one version at once
    staging = os.path.join(spec["models_dir"], model, f".{version}.partial-{os.uname().nodename}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for rel, size, sha in parse_manifest(data, model, version):
            dest = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            fetcher.download(store_key(store, model, version, rel), dest, size, sha)
        try:
            os.rename(staging, final)  # TF Serving never sees half a version
        except OSError:
            if not os.path.isdir(final):  # else another fetcher renamed its verified copy first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
