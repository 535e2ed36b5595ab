"""The CLI's start-up collector pause: always resumed, never left off, embedders untouched.

Each case runs in a fresh interpreter: the pause is process-wide and `gc.freeze()` cannot
be undone cleanly inside the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_pause_then_resume_reenables_and_freezes_startup_objects() -> None:
    out = run_python("""
        import gc
        from pipeline import startup
        startup.pause_collector()
        paused = (gc.isenabled(), startup.collector_paused())
        startup.resume_collector()
        startup.resume_collector()  # idempotent
        print(paused, gc.isenabled(), startup.collector_paused(), gc.get_freeze_count() > 0)
    """)
    assert out == "(False, True) True False True"


def test_fallback_timer_resumes_a_forgotten_pause() -> None:
    out = run_python("""
        import gc, time
        from pipeline import startup
        startup.pause_collector()
        before = gc.isenabled()
        time.sleep(startup.FALLBACK_S + 0.5)
        print(before, gc.isenabled())
    """)
    assert out == "False True"


def test_an_embedders_disabled_collector_is_left_alone() -> None:
    out = run_python("""
        import gc
        from pipeline import startup
        gc.disable()
        startup.pause_collector()
        startup.resume_collector()
        print(gc.isenabled(), startup.collector_paused())
    """)
    assert out == "False False"


@pytest.mark.parametrize("uri", ["file://{tmp}/store", "s3://bucket/prefix"])
def test_open_and_hash_resumes_the_collector_even_when_opening_fails(uri: str, tmp_path) -> None:  # noqa: ANN001
    vdir = tmp_path / "m" / "1"
    (vdir / "variables").mkdir(parents=True)
    (vdir / "saved_model.pb").write_bytes(b"graph")
    (vdir / "variables" / "variables.index").write_bytes(b"index")
    out = run_python(f"""
        import gc
        from pathlib import Path
        from pipeline import startup
        from pipeline.config import StorageConfig
        from pipeline.errors import StorageError
        from pipeline.storage.manifest import build_manifest
        from pipeline.storage.publish import open_and_hash
        startup.pause_collector()
        cfg = StorageConfig(uri={uri.format(tmp=tmp_path)!r}, profile="no-such-profile-anywhere")
        try:
            store, manifest = open_and_hash(cfg, Path({str(vdir)!r}), "m", 1)
            same = manifest.by_path() == build_manifest(Path({str(vdir)!r}), "m", 1).by_path()
            print("ok", same, gc.isenabled())
        except StorageError as exc:
            print("error", "no-such-profile-anywhere" in str(exc), gc.isenabled())
    """)
    expected = "ok True True" if uri.startswith("file") else "error True True"
    assert out == expected
