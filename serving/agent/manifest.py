"""The store manifest's file list, checked the same way by the pipeline's store and by the replicas.

Why here: the agent ships alone into the replicas (standard library only), and the pipeline may
import `serving` (the bottom layer), so the one definition of what a manifest may list lives
with the agent and `pipeline.storage.manifest` imports it. Pure: bytes in, values or errors out.
"""

from __future__ import annotations

import json
from typing import Any

from .common import AgentError

MANIFEST_NAME = "tfrollout.manifest.json"
MANIFEST_FORMAT = "tfrollout.store/1"


class UnsafePath(ValueError):
    """A listed path that would reach outside the version directory."""

    def __init__(self, path: str) -> None:
        super().__init__(f"bad relative path {path!r}")
        self.path = path


def check_relpath(path: str) -> str:
    """Refuse absolute paths, `..`, empty parts and backslashes: a manifest never writes outside its version dir."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise UnsafePath(path)
    return path


def load_manifest(data: bytes) -> Any:
    """The manifest's JSON, refused (ValueError) unless it is in our format."""
    raw = json.loads(data)
    if raw.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"unknown format {raw.get('format')!r}")
    return raw


def file_list(raw: Any) -> list[tuple[str, int, str]]:
    """[(path, size, sha256)] as listed, each path checked safe (UnsafePath) before its size is read;
    a missing or mistyped field is the KeyError/TypeError/ValueError of reading it."""
    return [(check_relpath(str(f["path"])), int(f["size"]), str(f["sha256"])) for f in raw["files"]]


def parse_manifest(data: bytes, model: str, version: int) -> list[tuple[str, int, str]]:
    """The agent's view: [(path, size, sha256)] of a store manifest that names this model and version."""
    try:
        raw = load_manifest(data)
        if raw["model_name"] != model or int(raw["version"]) != version:
            raise ValueError(f"it describes {raw['model_name']} version {raw['version']}")
        files = file_list(raw)
    except UnsafePath as exc:
        raise AgentError(f"manifest lists an unsafe path {exc.path!r}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AgentError(f"unreadable store manifest for {model} version {version}: {exc}") from None
    if not files:
        raise AgentError(f"store manifest for {model} version {version} lists no files")
    return files
