"""`tfrollout predict` reads a version's manifest without importing TensorFlow (README: predict
never imports it; the import alone costs seconds, every call)."""

import json
import subprocess
import sys
from pathlib import Path

CODE = """
import json, sys
from pipeline.config import build_config
from pipeline.commands.query import version_manifest
cfg = build_config({"export": {"root": sys.argv[1]}})
print(json.dumps({"manifest": version_manifest(cfg, "digits", 3),
                  "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_predicts_manifest_lookup_imports_no_tensorflow(tmp_path: Path):
    version = tmp_path / "digits" / "3"
    version.mkdir(parents=True)
    (version / "tfrollout.json").write_text(json.dumps({"version": 3, "classes": ["a", "b"]}))
    proc = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["manifest"] == {"version": 3, "classes": ["a", "b"]}
    assert out["tensorflow"] is False and out["keras"] is False
