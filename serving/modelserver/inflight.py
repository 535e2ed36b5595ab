"""What was running when the process died (issue 22, item 3).

With TFROLLOUT_INFLIGHT_FILE set (the local runtime's supervisor sets it), every run
writes its request's metadata (model, version, signature, each input's dtype and
shape; never a value) into one slot of a fixed-size, memory-mapped file and clears
it when the run ends. The kernel keeps a MAP_SHARED page's contents when the
process is killed (SIGKILL, OOM, an abort), so after an abnormal exit the supervisor
reads what was in flight (`read_inflight`). SLOTS × SLOT_BYTES bounds the file: when
more runs are in flight than slots, the extra ones are not recorded.

Standard library and numpy only; no-op (one attribute test) when the variable is unset.
"""

from __future__ import annotations

import json
import mmap
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV = "TFROLLOUT_INFLIGHT_FILE"
SLOTS = 32
SLOT_BYTES = 512
EMPTY = b"\0"


class InflightRecord:
    """The mmap'd slots of one server process."""

    def __init__(self, path: str | Path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SLOTS * SLOT_BYTES)
            self._map = mmap.mmap(fd, SLOTS * SLOT_BYTES, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._free = list(range(SLOTS))
        self._lock = threading.Lock()

    def begin(self, meta: dict[str, Any]) -> int | None:
        with self._lock:
            if not self._free:
                return None
            slot = self._free.pop()
        data = json.dumps(meta, separators=(",", ":")).encode()[: SLOT_BYTES - 1]
        start = slot * SLOT_BYTES
        self._map[start:start + SLOT_BYTES] = data + EMPTY * (SLOT_BYTES - len(data))
        return slot

    def end(self, slot: int | None) -> None:
        if slot is None:
            return
        self._map[slot * SLOT_BYTES] = 0
        with self._lock:
            self._free.append(slot)


def request_meta(model: str, version: int, signature: str,
                 arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Names, dtypes and shapes only (at most 8 inputs, 48-char names)."""
    inputs = {alias[:48]: [str(getattr(a, "dtype", "?")), list(getattr(a, "shape", ()))[:8]]
              for alias, a in list(arrays.items())[:8]}
    return {"model": model[:64], "version": version, "signature": signature[:64], "inputs": inputs,
            "at": round(time.time(), 3)}


def from_environment() -> InflightRecord | None:
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        return InflightRecord(path)
    except OSError:
        return None


def read_inflight(path: str | Path) -> list[dict[str, Any]]:
    """The requests recorded as in flight in `path` (oldest first); [] if none or unreadable."""
    try:
        raw = Path(path).read_bytes()[: SLOTS * SLOT_BYTES]
    except OSError:
        return []
    out = []
    for start in range(0, len(raw), SLOT_BYTES):
        data = raw[start:start + SLOT_BYTES].split(EMPTY, 1)[0]
        if not data:
            continue
        try:
            meta = json.loads(data)
        except ValueError:
            continue
        if isinstance(meta, dict):
            out.append(meta)
    return sorted(out, key=lambda m: m.get("at", 0))
