"""verify against a served model: the stage, and the pass/fail acceptance cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import build_config
from pipeline.errors import StageOrderError, VerifyError
from pipeline.progress import Reporter
from pipeline.run import RunRecord, StageContext
from pipeline.stages import verify as verify_stage
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Endpoint, ServedModel, verify_served
from tests.client.conftest import GOLDEN_REL, Served
from tests.support.results import export_output, finished


def test_same_model_passes_with_tiny_diff(served: Served) -> None:
    golden = load_golden(served.base / "1")
    report = verify_served(Endpoint(served.target), ServedModel(served.model, version=1), golden, Tolerance(atol=1e-6),
                           batch_size=4)
    assert report["ok"] and report["reason"] is None
    assert report["max_abs_diff"] <= 1e-6
    assert report["agreement"] == 1.0
    assert report["requests"] == 4 and report["served_versions"] == [1]
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99"}


def test_different_model_fails_naming_output_and_index(served: Served) -> None:
    golden = load_golden(served.base / "1")
    report = verify_served(Endpoint(served.target), ServedModel(served.model, label="canary"), golden, Tolerance())
    assert not report["ok"]
    assert report["worst"]["output"] == "probabilities"
    assert len(report["worst"]["index"]) == 2
    assert report["reason"].startswith("output 'probabilities' differs at index")
    assert report["max_abs_diff"] > 1e-3


def test_unknown_label_is_one_line(served: Served) -> None:
    golden = load_golden(served.base / "1")
    with pytest.raises(VerifyError, match="label 'gone'") as info:
        verify_served(Endpoint(served.target), ServedModel(served.model, label="gone"), golden, Tolerance(),
                      deadline_s=2)
    assert "\n" not in str(info.value)


def _ctx(tmp_path, served: Served, version_dir, **verify) -> StageContext:
    cfg = build_config({"run": {"workdir": str(tmp_path)},
                        "verify": {"endpoint": served.target, **verify}})
    record = RunRecord.new(cfg)
    record.stages["export"] = finished(export_output(version_dir, model_name=served.model,
                                                     golden=version_dir / GOLDEN_REL))
    return StageContext(config=cfg, record=record, reporter=Reporter(quiet=True))


def test_stage_verifies_the_exported_version(tmp_path, served: Served) -> None:
    out = verify_stage.run(_ctx(tmp_path, served, served.base / "2"))
    assert out.served_versions == [2] and out.max_abs_diff <= 1e-6
    assert json.loads(out.report.read_text())["ok"] is True


def test_stage_fails_against_a_label_serving_other_weights(tmp_path, served: Served) -> None:
    ctx = _ctx(tmp_path, served, served.base / "2", label="stable")
    with pytest.raises(VerifyError, match=r"does not match the golden set: output 'probabilities'"):
        verify_stage.run(ctx)
    report = json.loads((ctx.workdir / "verify.json").read_text())
    assert report["ok"] is False and report["label"] == "stable"


def test_stage_needs_export(tmp_path, served: Served) -> None:
    ctx = _ctx(tmp_path, served, served.base / "1")
    del ctx.record.stages["export"]
    with pytest.raises(StageOrderError):
        verify_stage.run(ctx)


def test_golden_file_problems(tmp_path) -> None:
    with pytest.raises(VerifyError, match="golden set not found"):
        load_golden(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(VerifyError, match="input.<name> and output.<name>"):
        load_golden(tmp_path / "bad.npz")
