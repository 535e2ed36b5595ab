"""The README quick start ("## The two commands"), run top to bottom on a fresh clone.

The commands are read from the README's code blocks in that section, so an edit that breaks
the quick start breaks this test. They run in a `git clone --local` of this repository with
the working tree's uncommitted changes copied over (in CI the two are the same), through the
shared `.venv` (symlinked; the clone's code comes first on PYTHONPATH, which is asserted),
on free ports, with fewer training epochs (env overrides: the README's commands are unchanged).
This test also carries what `test_deploy_demo.py` used to check about two deploys of the demo.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SECTION = "## The two commands"
NOT_RUN = {"make test"}  # the whole suite, this test included
# Fewer epochs than deploy.toml's, through the environment. Training is seeded: these give held-out
# accuracy ≈0.80 on every run (deploy.toml's gate: min_accuracy 0.4), and the second deploy trains
# the same model again, so its drop against the served version 1 is 0 (max_drop_vs_serving 0.02).
FAST = {
    "SOURCE_EPOCHS": "2",  # Makefile: `tfrollout demo source-model --epochs 2` (0.97 on printed digits)
    "TFROLLOUT_TRANSFER__HEAD_EPOCHS": "10",
    "TFROLLOUT_TRANSFER__FINE_TUNE_EPOCHS": "3",
    "TFROLLOUT_TRANSFER__BASELINE_EPOCHS": "10",
}


# --------------------------------------------------------------------------- the README


def section_text(readme: str, heading: str = SECTION) -> str:
    """The lines under `heading` up to the next heading of the same or a higher level."""
    lines = readme.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    for end in range(start + 1, len(lines)):
        match = re.match(r"(#+) ", lines[end])
        if match and len(match.group(1)) <= level:
            return "\n".join(lines[start + 1:end])
    return "\n".join(lines[start + 1:])


def code_commands(markdown: str) -> list[str]:
    """Every command line of the fenced code blocks, in order, without its comment."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def test_commands_are_read_from_the_readme_section():
    text = "# t\n## The two commands\n```bash\nmake a   # one\n\nmake b\n```\n### sub\n```\nx --y 'a b' # c\n```\n## Next\n```\nno\n```\n"
    assert code_commands(section_text(text)) == ["make a", "make b", "x --y 'a b'"]


# --------------------------------------------------------------------------- the clone


def fresh_clone(dest: Path) -> None:
    """HEAD cloned, then the working tree's changes to it (modified, deleted, new unignored files)."""
    subprocess.run(["git", "clone", "--quiet", "--local", str(REPO), str(dest)], check=True, timeout=120)

    def listed(*flags: str) -> list[str]:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", *flags], check=True,
                             capture_output=True, timeout=60).stdout.decode()
        return [name for name in out.split("\0") if name]

    for name in listed("--modified", "--others", "--exclude-standard"):
        source, target = REPO / name, dest / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif not source.exists():
            target.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (already dead, not yet reaped by its parent) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def runtime_pids(clone: Path) -> dict[str, int]:
    """The local runtime's supervisor and model server pids, as the runtime recorded them."""
    pids = {}
    serving = clone / ".tfrollout" / "serving"
    for name, path, key in (("supervisor", serving / "server.json", "supervisor"),
                            ("server", serving / "supervisor.json", "server")):
        try:
            entry = json.loads(path.read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
            pids[name] = entry["pid"]
    return pids


def stop_runtime(clone: Path, env: dict[str, str], pids: dict[str, int]) -> list[int]:
    """`serve stop`, then SIGKILL any recorded pid still alive that is this clone's; what was left."""
    subprocess.run([str(clone / ".venv" / "bin" / "tfrollout"), "serve", "stop"], cwd=clone, env=env,
                   capture_output=True, timeout=120)
    left = []
    for pid in {*pids.values(), *runtime_pids(clone).values()}:
        if not alive(pid):
            continue
        left.append(pid)
        try:
            ours = str(clone) in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            ours = False
        if ours:
            os.kill(pid, signal.SIGKILL)
    return left


# --------------------------------------------------------------------------- the test


def test_readme_quick_start_on_a_fresh_clone(tmp_path: Path):
    commands = code_commands(section_text((REPO / "README.md").read_text()))
    skipped = [c for c in commands if c in NOT_RUN]
    run = [c for c in commands if c not in NOT_RUN]
    assert skipped == ["make test"], commands
    deploys = [i for i, c in enumerate(run) if c == "make deploy"]
    assert len(deploys) == 2, f"the quick start deploys twice (version 1, then 2 via canary): {run}"
    for needed in ("predict", "make status", "make rollback", "make serve-stop"):
        assert any(needed in c for c in run[deploys[1]:]), f"{needed!r} missing after the 2nd deploy: {run}"

    clone = tmp_path / "clone"
    fresh_clone(clone)
    assert (clone / "README.md").read_text() == (REPO / "README.md").read_text()
    stamp = REPO / ".venv" / ".installed"
    assert stamp.is_file(), "the shared .venv is not installed: run `make install` first"
    (clone / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)
    # Make must see the venv as installed: the clone's pyproject.toml (new mtime) dated before
    # the stamp, so `make` never runs pip (that would re-point the shared venv at the clone).
    before = stamp.stat().st_mtime - 60
    os.utime(clone / "pyproject.toml", (before, before))
    assert not list(clone.rglob("__pycache__")), "a fresh clone has no bytecode"

    grpc_port, rest_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TFROLLOUT_") and k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "CONFIG",
                                                         "SOURCE_MODEL", "PYTHONDONTWRITEBYTECODE"}}
    env.update(FAST, PYTHONPATH=str(clone), TFROLLOUT_ROLLOUT__GRPC_PORT=str(grpc_port),
               TFROLLOUT_ROLLOUT__REST_PORT=str(rest_port))
    tfrollout = str(clone / ".venv" / "bin" / "tfrollout")

    dry = subprocess.run(["make", "-n", "deploy"], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0 and "pip install" not in dry.stdout, dry.stdout + dry.stderr
    assert f"--epochs {FAST['SOURCE_EPOCHS']}" in dry.stdout, dry.stdout
    where = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                            "import pipeline, serving; print(pipeline.__file__); print(serving.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert all(Path(p).resolve().is_relative_to(clone) for p in where.stdout.split()), where.stdout

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=900)
        timings.append((command, round(time.monotonic() - started, 1)))
        assert proc.returncode == 0, (f"README quick start: `{command}` exited {proc.returncode}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def status_json() -> dict[str, Any]:
        proc = subprocess.run([tfrollout, "status", "--json"], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=120)
        info = json.loads(proc.stdout)
        info["exit"] = proc.returncode
        return info

    def record() -> dict[str, Any]:
        return json.loads((clone / ".tfrollout" / "run.json").read_text())

    timings: list[tuple[str, float]] = []
    reports: list[dict[str, Any]] = []
    outputs: dict[str, str] = {}
    pids: dict[str, int] = {}
    try:
        for command in run:
            proc = sh(command)
            outputs[command] = proc.stdout
            pids.update(runtime_pids(clone))
            if command == "make deploy":
                reports.append(record())
            elif "demo sample" in command:
                digits = json.loads(re.search(r"handwritten digits (\[[\d, ]+\])", proc.stdout).group(1))
                assert len(digits) == 4
            elif "predict" in command:
                assert re.search(r"model 'digits' version 2\b", proc.stdout), proc.stdout
                rows = re.findall(r"^row (\d+): (\S+) \((0\.\d+|1\.0+)\)$", proc.stdout, flags=re.M)
                assert [int(r[0]) for r in rows] == [0, 1, 2, 3], proc.stdout
                assert all(name in {str(d) for d in range(10)} for _, name, _ in rows), proc.stdout
            elif command == "make status":
                info = status_json()
                assert info["exit"] == 0 and info["health"] == "healthy", info
                assert info["config"]["labels"] == {"stable": 2}, info
                server = Path(f"/proc/{info['pid']}")  # the model server: the clone's code too
                assert f"PYTHONPATH={clone}".encode() in (server / "environ").read_bytes().split(b"\0")
                assert (server / "cwd").resolve() == clone.resolve()
            elif command == "make rollback":
                info = status_json()
                assert info["exit"] == 0 and info["config"]["labels"] == {"stable": 1}, info
            elif command == "make serve-stop":
                assert "stopped" in proc.stdout, proc.stdout
                assert not port_open(grpc_port) and not port_open(rest_port)
                assert pids and not [pid for pid in pids.values() if alive(pid)], pids
                assert status_json()["exit"] == 10  # not running
    finally:
        left = stop_runtime(clone, env, pids)
        print("quick start step times (s):", timings)
    assert not left, f"model server processes outlived the test: {left}"
    assert [c for c, _ in timings] == run

    # the clone's code ran: its modules were compiled on import (a fresh clone has no bytecode),
    # and the model server the deploy started ran with the clone first on its path
    for package in ("pipeline/commands", "pipeline/stages", "serving/modelserver", "pipeline/targets"):
        assert list((clone / package / "__pycache__").glob("*.pyc")), package
    assert set(pids) == {"supervisor", "server"}, pids

    first, second = reports
    print("deploy stage times (s):", [{s: r["duration_s"] for s, r in rep["stages"].items()} for rep in reports])
    for report in reports:
        assert [s for s, r in report["stages"].items() if r["status"] == "ok"] == [
            "load", "transfer", "gate", "export", "push", "rollout", "verify"]
    gate = first["stages"]["gate"]["outputs"]
    assert gate["passed"] and gate["serving_note"].startswith("nothing is served yet")
    gate2 = second["stages"]["gate"]["outputs"]
    print("gate: v1", gate["accuracy"], "v2", gate2["accuracy"], "served v1 scored", gate2["serving_accuracy"])
    assert gate2["passed"] and gate2["serving_version"] == 1 and gate2["serving_accuracy"] is not None
    assert first["stages"]["export"]["outputs"]["version"] == 1
    assert second["stages"]["export"]["outputs"]["version"] == 2
    assert first["run_id"] != second["run_id"]
    rollout1, rollout2 = first["stages"]["rollout"]["outputs"], second["stages"]["rollout"]["outputs"]
    assert rollout1["action"] == "first-deploy" and rollout1["served"]["labels"] == {"stable": 1}
    assert rollout2["action"] == "update" and rollout2["previous"] == 1
    assert rollout2["served"]["labels"] == {"stable": 2} and "canary_available" in rollout2["timings_s"]
    assert rollout2["endpoint"].endswith(f":{grpc_port}")
    assert second["stages"]["verify"]["outputs"]["served_versions"] == [2]
    for version in ("1", "2"):
        vdir = clone / "exports" / "digits" / version
        assert (vdir / "saved_model.pb").is_file()
        assert (vdir / "variables" / "variables.index").is_file()
        assert (vdir / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
        assert json.loads((vdir / "tfrollout.json").read_text())["version"] == int(version)
        # pushed to the default file:// store, committed (manifest written last)
        assert (clone / "store" / "digits" / version / "saved_model.pb").is_file()
        assert (clone / "store" / "digits" / version / "tfrollout.manifest.json").is_file()
    assert (clone / "demo" / "source_model.keras").is_file()
    report = json.loads((clone / first["stages"]["transfer"]["outputs"]["report"]).read_text())
    assert report["labelled_examples"] == 10 and report["baseline"]["test_accuracy"] is not None
    assert report["transfer"]["test_accuracy"] > 0.3  # 1 label per class: well above 10-class chance (0.1)
