"""What a runtime serves, and what gc therefore keeps (pure, scripted targets; one CLI gc against a
closed docker port and a file:// store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import StorageConfig
from pipeline.errors import RolloutError
from pipeline.rollout.host import merged_config
from pipeline.rollout.plan import Served
from pipeline.rollout.served import (
    ConfiguredModel,
    RuntimeView,
    admin_token_for,
    ask_runtime,
    parse_config,
    protected_versions,
)
from pipeline.storage import open_store
from pipeline.storage.base import VersionInfo
from pipeline.storage.gc import select_gc
from pipeline.storage.publish import push_version
from serving import tfs_config
from tests.support.procs import free_port


def _config_text(*served: Served) -> str:
    text = None
    for s in served:
        text = tfs_config.to_text(merged_config(text, s, s.model, f"/store/{s.model}"))
    assert text is not None
    return text


def _v(version: int, model: str = "digits", committed: bool = True, age: float = 0.0) -> VersionInfo:
    return VersionInfo(model=model, version=version, committed=committed, files=3, bytes=100,
                       last_modified=1000.0 - age, uri=f"file:///s/{model}/{version}/")


def test_parse_config_reads_versions_labels_and_policy() -> None:
    text = _config_text(Served("digits", (3, 4), {"stable": 3, "canary": 4}), Served("other", (7,), {}))
    found = parse_config(text)
    assert found["digits"] == ConfiguredModel((3, 4), {"stable": 3, "canary": 4}, "specific")
    assert found["other"] == ConfiguredModel((7,), {}, "specific")
    assert parse_config(None) == {} and parse_config("") == {}
    latest = tfs_config.to_text(tfs_config.build_model_server_config([tfs_config.ModelEntry("m", "/x/m")]))
    assert parse_config(latest)["m"].policy == "latest"


def test_protected_are_loaded_labelled_and_the_rollback_target() -> None:
    view = RuntimeView("local", "127.0.0.1:1", running=True,
                       configured={"digits": ConfiguredModel((5,), {"stable": 5}, "specific")},
                       live={"digits": {5: "AVAILABLE", 2: "END"}, "other": {9: "LOADING"}})
    committed = {"digits": [1, 2, 3, 5, 6], "other": [8, 9]}
    got = protected_versions(view, committed)
    assert set(got) == {("digits", 5), ("digits", 3), ("other", 9), ("other", 8)}
    assert "loaded" in got[("digits", 5)] and "rollback" in got[("digits", 3)]
    assert ("digits", 2) not in got  # END: unloaded, nothing reads it


def test_rollback_target_on_the_host_is_kept_too() -> None:
    # rollback picks the newest committed version below stable that is on the host: 2, not 4
    view = RuntimeView("local", "e", running=True,
                       configured={"digits": ConfiguredModel((5,), {"stable": 5}, "specific")},
                       on_host={"digits": [1, 2, 5]})
    got = protected_versions(view, {"digits": [1, 2, 4, 5]})
    assert set(got) == {("digits", 5), ("digits", 4), ("digits", 2)}


def test_custom_stable_label_and_an_unlabelled_first_load() -> None:
    view = RuntimeView("docker", "e", configured={"m": ConfiguredModel((4,), {"prod": 4}, "specific"),
                                                  "n": ConfiguredModel((7,), {}, "specific")})
    got = protected_versions(view, {"m": [1, 3, 4], "n": [2, 6, 7]}, stable_label="prod")
    assert set(got) == {("m", 4), ("m", 3), ("n", 7), ("n", 6)}
    assert protected_versions(RuntimeView("local", "e", absent=True), {"m": [1, 2]}) == {}


def test_select_gc_never_deletes_protected_and_reports_them() -> None:
    versions = [_v(1), _v(2), _v(3), _v(4), _v(5, committed=False, age=500), _v(1, model="other")]
    protected = {("digits", 2): "label 'stable' on the runtime", ("digits", 5): "loaded by the runtime"}
    plan = select_gc(versions, keep=1, grace_s=100.0, now=1000.0, protected=protected)
    report = plan.to_json()
    assert report["deleted_committed"] == ["digits/1", "digits/3"]
    assert report["served"] == ["digits/2", "digits/5"] and report["deleted_stale"] == []
    assert report["kept"] == ["digits/4", "other/1"]
    assert report["served_reasons"] == {"digits/2": "label 'stable' on the runtime",
                                        "digits/5": "loaded by the runtime"}
    unprotected = select_gc(versions, keep=1, grace_s=100.0, now=1000.0).to_json()
    assert unprotected["deleted_committed"] == ["digits/1", "digits/2", "digits/3"]  # what went wrong before


def test_select_gc_keep_counts_the_newest_whether_served_or_not() -> None:
    plan = select_gc([_v(1), _v(2), _v(3)], keep=1, grace_s=0, now=1000.0, protected={("digits", 3)})
    assert plan.to_json()["deleted_committed"] == ["digits/1", "digits/2"]  # 3 is the newest one kept
    assert plan.to_json()["served"] == ["digits/3"] and plan.to_json()["kept"] == []
    plan = select_gc([_v(1), _v(2), _v(3)], keep=1, grace_s=0, now=1000.0, protected={("digits", 1)})
    assert plan.to_json()["deleted_committed"] == ["digits/2"] and plan.to_json()["served"] == ["digits/1"]


def test_admin_token_for_targets_with_and_without_the_method(tmp_path: Path) -> None:
    class Old:
        pass

    class New:
        def admin_token(self) -> str:
            return "tok"

    assert admin_token_for(Old()) is None  # type: ignore[arg-type]
    assert admin_token_for(New()) == "tok"  # type: ignore[arg-type]


@pytest.mark.parametrize("junk", ["model_config_list { config { name: ", "not a config"])
def test_parse_config_of_junk_raises(junk: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - ask_runtime turns it into an unchecked line
        parse_config(junk)


class _Target:
    """The four read-only calls `ask_runtime` makes, scripted (no process, no engine)."""

    kind, endpoint = "stub", "127.0.0.1:1"

    def __init__(self, *, running: object = False, config: object = None, on_host: object = ()) -> None:
        self._running, self._config, self._on_host = running, config, on_host

    def _answer(self, value: object) -> object:
        if isinstance(value, BaseException):
            raise value
        return value

    def running(self) -> bool:
        return bool(self._answer(self._running))

    def read_config(self) -> str | None:
        return self._answer(self._config)  # type: ignore[return-value]

    def versions(self, model: str) -> list[int]:
        return list(self._answer(self._on_host))  # type: ignore[call-overload]


def test_ask_runtime_never_set_up_is_absent_not_unchecked() -> None:
    view = ask_runtime(_Target(), ["digits"])  # type: ignore[arg-type]
    assert view.absent and not view.unchecked and not view.running


def test_ask_runtime_records_every_check_it_could_not_make() -> None:
    text = _config_text(Served("digits", (2,), {"stable": 2}))
    stopped = ask_runtime(_Target(config=text), ["digits"])  # type: ignore[arg-type]
    assert not stopped.absent and "is not running" in stopped.unchecked[0]
    assert protected_versions(stopped, {"digits": [1, 2, 3]}) == {
        ("digits", 2): "label 'stable' on the runtime",
        ("digits", 1): "previous stable (what `rollback` returns to from 2)"}  # still kept with --force
    engine = ask_runtime(_Target(running=RolloutError("Docker engine at tcp://x unreachable: boom")),
                         ["digits"])  # type: ignore[arg-type]
    assert engine.unchecked == ["cannot tell whether the stub runtime runs: Docker engine at tcp://x "
                                "unreachable: boom"]
    junk = ask_runtime(_Target(running=True, config="model_config_list { nope"), ["digits"])  # type: ignore[arg-type]
    assert "cannot read the stub runtime's model config" in junk.unchecked[0]
    delivered = ask_runtime(_Target(on_host=[1]), ["digits"])  # type: ignore[arg-type]
    assert not delivered.absent and delivered.unchecked  # files delivered, nothing to ask: not "absent"


def test_gc_refuses_in_one_line_when_the_docker_engine_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "deploy.toml"
    config.write_text(f'[storage]\nuri = "file://{tmp_path}/store"\n[run]\nworkdir = "{tmp_path}/w"\n'
                      f'[rollout]\ntarget = "docker"\ndocker_host = "tcp://127.0.0.1:{port}"\n')
    store = open_store(StorageConfig(uri=f"file://{tmp_path}/store"))
    for version in (1, 2, 3):
        (tmp_path / "v" / str(version)).mkdir(parents=True)
        (tmp_path / "v" / str(version) / "saved_model.pb").write_bytes(b"v%d" % version)
        push_version(store, tmp_path / "v" / str(version), "digits", version, create=True)
    refused = CliRunner().invoke(app, ["storage", "gc", "--config", str(config), "--keep", "1"])
    assert refused.exit_code == 6
    line = refused.stderr.strip()
    assert line.startswith("error: gc refused, nothing deleted: cannot tell whether the docker runtime runs: "
                           f"Docker engine at tcp://127.0.0.1:{port} unreachable") and "\n" not in line
    assert [v.version for v in store.committed_versions("digits")] == [1, 2, 3]
    forced = CliRunner().invoke(app, ["storage", "gc", "--config", str(config), "--keep", "1", "--force",
                                      "--json"])
    assert forced.exit_code == 0, forced.stderr
    report = json.loads(forced.stdout)
    assert report["deleted_committed"] == ["digits/1", "digits/2"] and report["runtime"]["unchecked"]
