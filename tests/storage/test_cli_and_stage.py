"""`tfrollout push` / `storage ls|pull|gc` and the `push` stage of `tfrollout deploy`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import build_config
from pipeline.progress import Reporter
from pipeline.results import PushOutput
from pipeline.run import STAGE_ORDER, RunRecord, load_record, run_pipeline, save_record
from tests.storage.conftest import MotoServer, tree_digests, write_version
from tests.support.results import export_output, finished


def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(app, list(args))


def _json(result) -> dict:  # noqa: ANN001
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _record_with_export(tmp_path: Path, vdir: Path, **storage: object):  # noqa: ANN202
    """A run record whose `export` stage finished, pointing at `vdir` (what the lead's stage writes)."""
    cfg = build_config({"run": {"workdir": str(tmp_path / ".tfrollout")}, "storage": storage})
    record = RunRecord.new(cfg)
    record.stages["export"] = finished(export_output(vdir, version=1, golden=tmp_path / "golden.npz"))
    save_record(cfg, record)
    return cfg


def test_push_is_the_stage_after_export() -> None:
    assert STAGE_ORDER[STAGE_ORDER.index("export") + 1] == "push"


def test_push_stage_uses_export_outputs_and_records_result(tmp_path: Path) -> None:
    vdir = write_version(tmp_path / "exports")
    cfg = _record_with_export(tmp_path, vdir, uri=f"file://{tmp_path}/store")
    summary = run_pipeline(cfg, Reporter(quiet=True), from_stage="push", until_stage="push")
    out = summary.record.output(PushOutput)
    assert out.uri == (tmp_path / "store" / "digits" / "1").as_uri() + "/"
    assert out.bytes_uploaded == out.total_bytes and out.files_uploaded == 5
    reloaded = load_record(cfg)
    assert reloaded is not None and reloaded.output(PushOutput) == out  # survives the JSON round trip
    again = run_pipeline(cfg, Reporter(quiet=True), from_stage="push", until_stage="push")
    assert again.record.output(PushOutput).bytes_uploaded == 0


def test_cli_push_from_run_record_to_s3_then_ls_pull_gc(tmp_path: Path, moto: MotoServer, bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    vdir = write_version(tmp_path / "exports")
    storage = {"uri": f"s3://{bucket}/m", "endpoint_url": moto.endpoint, "addressing_style": "path",
               "max_attempts": 2}
    _record_with_export(tmp_path, vdir, **storage)
    (tmp_path / "deploy.toml").write_text(
        f'[run]\nworkdir = "{tmp_path / ".tfrollout"}"\n[storage]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in storage.items()))
    pushed = _json(_invoke("push", "--json"))
    assert pushed["ok"] and pushed["bytes_uploaded"] == pushed["total_bytes"]
    assert pushed["uri"] == f"s3://{bucket}/m/digits/1/"

    v2 = write_version(tmp_path / "exports", version=2, seed=2)
    second = _json(_invoke("push", "--dir", str(v2), "--json"))
    assert (second["model_name"], second["version"]) == ("digits", 2)  # read from tfrollout.json

    listing = _json(_invoke("storage", "ls", "--json"))
    assert [(v["model"], v["version"], v["committed"]) for v in listing["versions"]] == [
        ("digits", 1, True), ("digits", 2, True)]
    human = _invoke("storage", "ls")
    assert human.exit_code == 0 and "committed" in human.stdout

    pulled = _json(_invoke("storage", "pull", "digits", "--json"))
    assert pulled["version"] == 2
    assert tree_digests(Path(pulled["dest"])) == tree_digests(v2)

    refused = _invoke("push", "--dir", str(write_version(tmp_path / "other", version=2, seed=9)))
    assert refused.exit_code == 6 and "already committed with different content" in refused.stderr

    dry = _json(_invoke("storage", "gc", "--keep", "1", "--dry-run", "--json"))
    assert dry["deleted_committed"] == ["digits/1"] and dry["dry_run"]
    assert len(_json(_invoke("storage", "ls", "--json"))["versions"]) == 2
    done = _json(_invoke("storage", "gc", "--keep", "1", "--json"))
    assert done["deleted_committed"] == ["digits/1"]
    assert done["runtime"]["absent"] and done["served"] == []  # no runtime was ever set up here: none to ask
    assert [v["version"] for v in _json(_invoke("storage", "ls", "--json"))["versions"]] == [2]


def test_cli_default_store_is_file_store_under_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    vdir = write_version(tmp_path / "exports")
    result = _invoke("push", "--dir", str(vdir))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "store" / "digits" / "1" / "saved_model.pb").is_file()
    missing = _invoke("storage", "pull", "digits", "9")
    assert missing.exit_code == 6 and missing.stderr.strip() == "error: digits version 9 not found in the store"


def test_push_refuses_a_version_whose_golden_outputs_hold_nan(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-pushed version whose golden set holds the model's own NaN outputs would verify NaN
    against NaN: refused at push (exit 8), nothing in the store; an output opted in goes through."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    vdir = write_version(tmp_path / "exports")
    golden = vdir / "assets.extra" / "tfrollout_golden.npz"
    golden.parent.mkdir(parents=True, exist_ok=True)
    np.savez(golden, **{"input.x": np.zeros((4, 8, 8, 1), np.float32),
                        "output.probabilities": np.full((4, 10), np.nan, np.float32)})
    refused = _invoke("push", "--dir", str(vdir))
    assert refused.exit_code == 8, refused.stderr
    assert "golden outputs hold NaN/Inf: 'probabilities' (40 of 40 values)" in refused.stderr
    assert not (tmp_path / "store" / "digits").exists()
    opted = _invoke("push", "--dir", str(vdir), "--set", 'verify.allow_non_finite=["probabilities"]')
    assert opted.exit_code == 0, opted.stderr
    assert (tmp_path / "store" / "digits" / "1" / "assets.extra" / "tfrollout_golden.npz").is_file()
