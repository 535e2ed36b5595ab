"""The agent ships as one deterministic zip: same sources, same bytes (swarm configs are named by
content), and python runs it with nothing but the standard library on its path."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from serving.agent import bundle


def _run(pyz: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -I -S: no site-packages, no PYTHONPATH, no user site: only the stdlib and the zip itself
    return subprocess.run([sys.executable, "-I", "-S", str(pyz), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_two_builds_give_identical_bytes_whatever_the_file_times(tmp_path: Path):
    assert bundle.agent_bundle() == bundle.agent_bundle()
    copy = tmp_path / "agent"
    shutil.copytree(bundle.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    first = bundle.agent_bundle(copy)
    assert first == bundle.agent_bundle()
    for path in copy.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert bundle.agent_bundle(copy) == first
    (copy / "cli.py").write_text((copy / "cli.py").read_text() + "\n# changed\n")
    assert bundle.agent_bundle(copy) != first


def test_entries_are_sorted_stored_and_dated_1980():
    with zipfile.ZipFile(io.BytesIO(bundle.agent_bundle())) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert names[:3] == ["__main__.py", "serving/__init__.py", "serving/agent/__init__.py"]
        shipped = {f"serving/agent/{p.name}" for p in bundle.PACKAGE_DIR.glob("*.py")} - {"serving/agent/bundle.py"}
        assert set(names[1:]) - {"serving/__init__.py"} == shipped
        assert {(i.date_time, i.compress_type, i.external_attr >> 16) for i in infos} == {
            ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED, 0o100644)}
        assert zf.read("serving/agent/cli.py") == (bundle.PACKAGE_DIR / "cli.py").read_bytes()


def test_python_runs_the_bundle_from_a_temp_file(tmp_path: Path):
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(bundle.agent_bundle())
    usage = _run(pyz, "--help", cwd=tmp_path)
    assert usage.returncode == 2 and "agent.pyz serve SPEC" in usage.stderr, usage.stderr
    fspec = tmp_path / "fetch.json"
    fspec.write_text(json.dumps({"model": "digits", "models_dir": str(tmp_path), "versions": [{"version": 2}]}))
    missing = _run(pyz, "fetched", str(fspec), cwd=tmp_path)
    assert missing.returncode == 1 and "unhealthy: missing" in missing.stdout, missing.stderr
    (tmp_path / "digits" / "2").mkdir(parents=True)
    present = _run(pyz, "fetched", str(fspec), cwd=tmp_path)
    assert (present.returncode, present.stdout.strip()) == (0, "healthy: every version present"), present.stderr
