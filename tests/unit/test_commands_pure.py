"""The CLI's decisions without Typer or servers: where verify asks, config renames, the error handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import COMMANDS, app, mount
from pipeline.commands.common import handle_errors
from pipeline.commands.query import resolve_request
from pipeline.commands.store import infer_identity, listing_lines
from pipeline.config import build_config, load_config
from pipeline.errors import ConfigError, StorageError, VerifyError
from pipeline.stages.verify import served_versions_problem, what_to_verify
from pipeline.verify.runner import ServedModel
from tests.support.results import export_output, sample_output


def test_verify_endpoint_follows_the_rollout_port_unless_set():
    export = export_output(Path("/x/digits/3"))
    moved = build_config({"rollout": {"grpc_port": 9100}})
    endpoint, wanted = what_to_verify(moved, export, None)
    assert endpoint.address == "127.0.0.1:9100" and wanted == ServedModel("digits", 3, None)
    pinned = build_config({"rollout": {"grpc_port": 9100}, "verify": {"endpoint": "10.0.0.1:1"}})
    assert what_to_verify(pinned, export, None)[0].address == "10.0.0.1:1"


def test_after_a_rollout_verify_asks_the_stable_label_at_the_rollout_endpoint():
    rollout = sample_output("rollout").model_copy(update={"endpoint": "127.0.0.1:7000", "version": 3})
    endpoint, wanted = what_to_verify(build_config(), export_output(Path("/x/digits/3")), rollout)
    assert endpoint.address == "127.0.0.1:7000" and (wanted.label, wanted.version) == ("stable", None)
    explicit = build_config({"verify": {"version": 2}})
    assert what_to_verify(explicit, export_output(Path("/x/digits/3")), rollout)[1].version == 2
    with pytest.raises(VerifyError, match="not both"):
        what_to_verify(build_config({"verify": {"version": 2, "label": "x"}}),
                       export_output(Path("/x/digits/3")), rollout)


def test_stable_answering_another_version_is_a_failure():
    rollout = sample_output("rollout").model_copy(update={"version": 3})
    stable = ServedModel("digits", None, "stable")
    assert served_versions_problem({"served_versions": [3]}, stable, rollout) is None
    assert "expected 3" in (served_versions_problem({"served_versions": [2]}, stable, rollout) or "")
    assert served_versions_problem({"served_versions": [2]}, stable, None) is None


def test_tls_files_come_from_the_config_and_flags_win():
    cfg = build_config({"verify": {"ca_cert": "/ca.pem", "server_name": "srv"}})
    endpoint, _ = resolve_request(cfg, address=None, model=None, version=None, label=None, signature=None)
    assert endpoint.ca_cert == Path("/ca.pem") and endpoint.server_name == "srv"
    tls = endpoint.tls()
    assert tls is not None
    endpoint, _ = resolve_request(cfg, address="h:1", model="m", version=None, label=None, signature=None,
                                  ca_cert=Path("/other.pem"))
    assert endpoint.address == "h:1" and endpoint.ca_cert == Path("/other.pem")
    assert resolve_request(build_config(), address=None, model=None, version=None, label=None,
                           signature=None)[0].tls() is None


def test_old_verify_target_key_still_works_with_a_warning():
    cfg = build_config({"verify": {"target": "127.0.0.1:9"}})
    assert cfg.verify.endpoint == "127.0.0.1:9"
    assert any("verify.target is deprecated" in w for w in cfg.warnings)
    assert build_config({}, {"TFROLLOUT_VERIFY__TARGET": "h:2"}).verify.endpoint == "h:2"
    with pytest.raises(ConfigError, match="set only verify.endpoint"):
        build_config({"verify": {"target": "a:1", "endpoint": "b:2"}})


@pytest.mark.parametrize("key", ["transfer.learning_rate", "verify.atol", "export.parity_atol",
                                 "rollout.load_timeout_s"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused_naming_the_key(key: str, value: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": Input should be a finite number"):
        build_config({}, {}, [f"{key}={value}"])


def test_the_error_handler_turns_errors_into_one_line_and_the_exit_code(capsys):
    @handle_errors
    def broken(as_json: bool = False, debug: bool = False) -> None:
        raise StorageError("bucket gone")

    with pytest.raises(typer.Exit) as info:
        broken(as_json=True)
    assert info.value.exit_code == StorageError.exit_code
    out, err = capsys.readouterr()
    assert err.strip() == "error: bucket gone" and json.loads(out) == {"ok": False, "error": "bucket gone"}

    @handle_errors
    def buggy(as_json: bool = False, debug: bool = False) -> None:
        raise KeyError("x")

    with pytest.raises(typer.Exit) as info:
        buggy()
    assert info.value.exit_code == 1 and "internal error: KeyError" in capsys.readouterr().err


@pytest.mark.parametrize("raised, expected", [
    (OSError(28, "No space left on device", "/exports/digits/.staging-1/x.npz"),
     "error: No space left on device (/exports/digits/.staging-1/x.npz); free disk space and re-run"),
    (__import__("shutil").Error([("/a/saved_model.pb", "/b/saved_model.pb", "[Errno 28] No space left")]),
     "error: copying /a/saved_model.pb to /b/saved_model.pb failed: [Errno 28] No space left"),
    (PermissionError(13, "Permission denied", "/srv/models"),
     "error: Permission denied (/srv/models); check the permissions"),
])
def test_file_system_errors_are_one_line_naming_the_file(capsys, raised: OSError, expected: str):
    from pipeline.commands.common import OS_ERROR_EXIT

    @handle_errors
    def writes(as_json: bool = False, debug: bool = False) -> None:
        raise raised

    with pytest.raises(typer.Exit) as info:
        writes(as_json=True)
    out, err = capsys.readouterr()
    assert info.value.exit_code == OS_ERROR_EXIT
    assert err.strip().startswith(expected) and "internal error" not in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["ok"] is False


def test_every_registered_command_mounts_and_has_help():
    runner = CliRunner()
    for name in COMMANDS:
        command = mount(name)
        assert command.name == name
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.stdout
    for group, sub in (("config", "check"), ("demo", "source-model"), ("storage", "gc"), ("serve", "stop")):
        result = runner.invoke(app, [group, sub, "--help"])
        assert result.exit_code == 0 and f"tfrollout {group} {sub}" in result.stdout, result.output


def test_a_bad_config_is_one_line_through_the_cli(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[verify]\natol = nan\n")
    result = CliRunner().invoke(app, ["status", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid config: verify.atol: Input should be a finite number (got nan)"]


def test_listing_marks_uncommitted_versions_and_pushes_in_progress():
    report = {"uri": "s3://b/m", "versions": [
        {"model": "digits", "version": 1, "committed": True, "problems": [], "bytes": 2_000_000,
         "files": 5, "last_modified": 0.0},
        {"model": "digits", "version": 2, "committed": False, "problems": ["no manifest"], "bytes": 10,
         "files": 1, "last_modified": 0.0}],
        "pushing": [{"model": "digits", "version": 2, "owner": "ci@host pid 7", "since": 0.0},
                    {"model": "digits", "version": 3, "owner": "me", "since": 0.0}]}
    lines = listing_lines(report)
    assert "2.0 MB" in lines[0] and lines[0].rstrip().endswith("committed")
    assert "UNCOMMITTED (no manifest); push in progress by ci@host pid 7" in lines[1]
    assert "push in progress by me (nothing stored yet)" in lines[2]
    assert listing_lines({"uri": "s3://b", "versions": [], "pushing": []}) == ["s3://b: no versions"]


def test_push_dir_identity_from_flags_manifest_or_path(tmp_path):
    vdir = tmp_path / "parts" / "4"
    vdir.mkdir(parents=True)
    assert infer_identity(vdir, None, None) == ("parts", 4)
    assert infer_identity(vdir, "other", 9) == ("other", 9)
    odd = tmp_path / "parts" / "latest"
    odd.mkdir()
    with pytest.raises(StorageError, match="pass --version"):
        infer_identity(odd, None, None)


def test_config_check_masks_passwords_in_urls(tmp_path):
    result = CliRunner().invoke(app, ["config", "check", "--set",
                                      'storage.endpoint_url="http://minio:s3cr3t@127.0.0.1:9000/x"',
                                      "--set", 'rollout.docker_host="ssh://deploy:hunter2@host"'])
    assert result.exit_code == 0, result.output
    assert "s3cr3t" not in result.stdout and "hunter2" not in result.stdout
    assert '"http://minio:***@127.0.0.1:9000/x"' in result.stdout and "ssh://deploy:***@host" in result.stdout


def test_config_edge_cases_are_one_line_errors(tmp_path):
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    for path in (tmp_path, tmp_path / "binary.toml"):
        with pytest.raises(ConfigError, match=f"config file {path}"):
            load_config(path)
    with pytest.raises(ConfigError, match="canary_label and stable_label are both 'stable'"):
        build_config({}, {}, ['rollout.canary_label="stable"'])
    with pytest.raises(ConfigError, match="transfer.batch_size: Input should be less than or equal"):
        build_config({}, {}, ["transfer.batch_size=10000000000000000000000"])
    assert build_config({}, {}, ['model.cut_layer=""']).model.cut_layer is None
    assert build_config({}, {"TFROLLOUT_MODEL__CUT_LAYER": ""}).model.cut_layer is None


def test_listing_shows_each_versions_evaluation():
    from pipeline.commands.store import evaluation_text

    passed = {"metrics": {"test_accuracy": 0.8125, "baseline_test_accuracy": 0.79},
              "quality_gate": {"passed": True, "overridden": False}}
    forced = {"metrics": {"test_accuracy": 0.2, "baseline_test_accuracy": None},
              "quality_gate": {"passed": False, "overridden": True}}
    assert evaluation_text(passed) == "acc 0.812 vs scratch 0.790, gate passed"
    assert evaluation_text(forced) == "acc 0.200, gate FAILED, published with gate.enforce=false"
    assert evaluation_text({"quality_gate": {"passed": None}}) == "gate not passed"  # unknown is not a pass
    assert evaluation_text(None) == evaluation_text({}) == ""
    report = {"uri": "s3://b", "pushing": [], "versions": [
        {"model": "digits", "version": 4, "committed": True, "problems": [], "bytes": 10, "files": 5,
         "last_modified": 0.0, "export": passed}]}
    assert listing_lines(report)[0].endswith("committed  acc 0.812 vs scratch 0.790, gate passed")
