"""`storage gc` against a real local model server that reads its versions straight from a
file:// store (passthrough): the served version and the previous stable survive `--keep 1`,
`labels/stable` still answers; a stopped runtime makes gc refuse unless --force; rollback
then still finds the previous stable in the store."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DeployConfig
from pipeline.rollout.reload_rollback import rollback_model
from pipeline.rollout.served import ask_runtime
from pipeline.rollout.session import open_session
from pipeline.storage import open_store
from pipeline.storage.publish import push_version
from pipeline.targets import open_target
from tests.rollout.conftest import local_config
from tests.rollout.models import MODEL, Versions
from tests.support.procs import free_port


def _toml(cfg: DeployConfig, path: Path) -> Path:
    """The deploy config as a file the CLI reads (only the keys this test sets)."""
    r = cfg.rollout
    path.write_text(f'[storage]\nuri = "{cfg.storage.uri}"\n[run]\nworkdir = "{cfg.run.workdir}"\n'
                    f'[rollout]\ntarget = "local"\nlocal_dir = "{r.local_dir}"\ngrpc_port = {r.grpc_port}\n'
                    f'rest_port = {r.rest_port}\nmodel_base_path = "{r.model_base_path}"\n')
    return path


def _gc(config: Path, *extra: str):  # noqa: ANN202
    return CliRunner().invoke(app, ["storage", "gc", "--config", str(config), "--keep", "1", *extra])


def _rest_stable(port: int) -> dict:
    x = np.random.default_rng(1).random((1, 8, 8, 1))  # not zeros: those hit only the (zero) biases
    body = json.dumps({"instances": x.tolist()}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{MODEL}/labels/stable:predict",
                                     data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read())


def test_gc_keeps_what_a_passthrough_runtime_serves(tmp_path: Path, versions: Versions) -> None:
    store_root = tmp_path / "store"
    store = open_store(local_config(tmp_path, f"file://{store_root}").storage)
    for number, source in ((1, 1), (2, 2), (3, 1), (4, 2)):  # our own store: gc mutates it
        push_version(store, versions.dirs[source], MODEL, number, create=True)
    rest = free_port()
    cfg = local_config(tmp_path, f"file://{store_root}", model_base_path=str(store_root), rest_port=rest)
    config = _toml(cfg, tmp_path / "deploy.toml")
    target = open_target(cfg.rollout, cfg.run.workdir)
    try:
        session = open_session(cfg, MODEL, store=store)
        try:
            assert session.machine.rollout(MODEL, 2).action == "first-deploy"
            report = session.machine.rollout(MODEL, 3)
        finally:
            session.close()
        assert report.action == "update" and report.served == {"model": MODEL, "versions": [3],
                                                               "labels": {"stable": 3}}
        before = _rest_stable(rest)
        view = ask_runtime(target, [MODEL])  # GetModelStatus through the admin token, not a guess
        assert view.running and not view.unchecked and view.live[MODEL].get(3) == "AVAILABLE"

        result = _gc(config, "--json")
        assert result.exit_code == 0, result.stderr
        gc = json.loads(result.stdout)
        assert gc["deleted_committed"] == [f"{MODEL}/1"] and gc["kept"] == [f"{MODEL}/4"]
        assert gc["served"] == [f"{MODEL}/2", f"{MODEL}/3"]
        assert "loaded by the runtime" in gc["served_reasons"][f"{MODEL}/3"]
        assert "rollback" in gc["served_reasons"][f"{MODEL}/2"]
        assert gc["runtime"]["unchecked"] == [] and gc["runtime"]["running"]
        assert [v.version for v in store.committed_versions(MODEL)] == [2, 3, 4]
        assert _rest_stable(rest) == before  # labels/stable still answers, same outputs
        assert (store_root / MODEL / "3" / "saved_model.pb").is_file()

        push_version(store, versions.dirs[1], MODEL, 5, create=True)
        target.stop()
        refused = _gc(config)
        assert refused.exit_code == 6 and refused.stdout == ""
        line = refused.stderr.strip()
        assert line.startswith("error: gc refused, nothing deleted: the local runtime at ") and "\n" not in line
        assert "not running" in line and "--force" in line
        assert [v.version for v in store.committed_versions(MODEL)] == [2, 3, 4, 5]

        forced = _gc(config, "--force", "--json")
        assert forced.exit_code == 0, forced.stderr
        done = json.loads(forced.stdout)
        assert done["deleted_committed"] == [f"{MODEL}/4"]  # the persisted labels still protect 2 and 3
        assert done["served"] == [f"{MODEL}/2", f"{MODEL}/3"] and "not running" in done["runtime"]["unchecked"][0]
        human = _gc(config, "--force", "--dry-run")
        assert "NOT CHECKED (--force)" in human.stdout and "served, untouched" in human.stdout

        # what gc kept is what rollback needs: restore the stopped runtime, then back to 2
        assert rollback_model(cfg, MODEL)["action"] == "restore"
        back = rollback_model(cfg, MODEL)
        assert back["action"] == "rollback" and back["served"]["labels"] == {"stable": 2}
        assert _rest_stable(rest)["predictions"] != before["predictions"]  # v2's weights answer now
    finally:
        target.stop()
