"""The agent as the one file a replica runs: a zipapp-style zip of this package (pipeline side).

Why one deterministic zip: the agent travels as a single swarm config object, and configs are
named by the sha256 of their content, so the same sources must give the same bytes (a rollout
then reuses the object instead of creating a new one, and a rollback finds the old one). Hence:
entries sorted by name, every timestamp 1980-01-01 00:00, fixed permissions and creator system,
and no compression (ZIP_STORED: deflate output may differ between zlib builds; the bundle is a
few tens of KB, far below swarm's 500 KB config limit). `python3 agent.pyz MODE SPEC` runs
`__main__.py`, which calls `serving.agent.cli.main`; the zip is first on sys.path, so its
`serving` package (a stub `__init__` plus this package's modules) shadows any other.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
EPOCH = (1980, 1, 1, 0, 0, 0)
NOT_SHIPPED = frozenset({"bundle.py"})  # builds the zip; nothing in a replica needs it
MAIN = b'''"""Entry point of the tfrollout replica agent bundle (built by serving/agent/bundle.py)."""

import sys

from serving.agent.cli import main

sys.exit(main(sys.argv[1:]))
'''
SERVING_INIT = b'"""Only the replica agent (serving.agent) of the serving package: the agent bundle\'s root."""\n'


def bundle_entries(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, bytes]]:
    """(name in the zip, bytes) of every shipped file, sorted by name."""
    entries = [("__main__.py", MAIN), ("serving/__init__.py", SERVING_INIT)]
    for path in package_dir.rglob("*.py"):
        rel = path.relative_to(package_dir)
        if "__pycache__" in rel.parts or rel.as_posix() in NOT_SHIPPED:
            continue
        entries.append((f"serving/agent/{rel.as_posix()}", path.read_bytes()))
    return sorted(entries)


def agent_bundle(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The zip's bytes: equal sources give equal bytes (see the module docstring)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in bundle_entries(package_dir):
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # Unix, whatever builds it
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            zf.writestr(info, data)
    return buf.getvalue()
