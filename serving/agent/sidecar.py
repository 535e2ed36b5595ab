"""Fetch mode (`rollout.swarm_fetch = "sidecar"`): for serving images without Python, such as the
official tensorflow/serving.

Why a separate service: the same fetch + verify runs in a global service, one task per node, into
a named volume the serving replicas mount read-only (`pipeline.targets.swarm.fetch_spec`). Every
listed version is fetched (each staged privately, renamed when complete), then the versions the
spec no longer lists are removed; the task idles until stopped, so its files stay.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from typing import Any

from .common import AgentError, read_optional
from .fetch import fetch_version

STALE_STAGING_S = 3600.0


def version_dirs(spec: dict[str, Any]) -> list[str]:
    """The complete-version directories a fetch spec wants (pure)."""
    return [os.path.join(spec["models_dir"], spec["model"], str(int(v["version"]))) for v in spec["versions"]]


def prune(model_dir: str, keep: set[int], now: float, stale_s: float = STALE_STAGING_S) -> list[str]:
    """Remove version directories not in `keep`, and staging directories a crashed fetcher left
    (older than `stale_s`: a live fetcher's are younger). Returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(model_dir)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        path = os.path.join(model_dir, name)
        if name.isdigit() and int(name) not in keep:
            pass
        elif name.startswith(".") and ".partial" in name and now - os.path.getmtime(path) > stale_s:
            pass
        else:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
    return removed


def fetch_all(spec: dict[str, Any]) -> int:
    """The fetch service: every listed version fetched + verified into the volume, the rest pruned,
    then idle until stopped (files stay). Exits 3 on a version that cannot be proven: the task fails,
    so swarm rolls the fetch service back and the rollout never touches the serving service."""
    creds = json.loads(read_optional(spec.get("credentials_file")) or "null")
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    started = time.monotonic()
    for entry in spec["versions"]:
        one = {"model": spec["model"], "version": int(entry["version"]), "store": spec["store"],
               "models_dir": spec["models_dir"], "manifest_sha256": entry.get("manifest_sha256")}
        try:
            path = fetch_version(one, creds)
        except AgentError as exc:
            print(f"tfrollout-fetch: refusing to fetch: {exc}", flush=True)
            return 3
        print(f"tfrollout-fetch: {path} present and verified ({time.monotonic() - started:.2f} s)", flush=True)
    keep = {int(v["version"]) for v in spec["versions"]}
    removed = prune(os.path.join(spec["models_dir"], spec["model"]), keep, time.time())
    if removed:
        print(f"tfrollout-fetch: removed {', '.join(removed)}", flush=True)
    while not stop:
        time.sleep(0.5)
    return 0


def fetched(spec: dict[str, Any]) -> int:
    """The fetch service's health check: every listed version directory is there (they appear by rename)."""
    missing = [d for d in version_dirs(spec) if not os.path.isdir(d)]
    print(f"unhealthy: missing {', '.join(missing)}" if missing else "healthy: every version present")
    return 1 if missing else 0
