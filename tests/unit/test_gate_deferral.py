"""The comparison with serving, deferred by a run that stops before rollout and owed by the rollout.

No training and no serving host: the held-out set is a small .npz, the candidate's and the
served stable version's predictions are made up, and `served_stable` (the one place the
serving host is asked) is replaced per test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import build_config
from pipeline.errors import GateError, RolloutError
from pipeline.progress import Reporter
from pipeline.results import DeferredComparison, GateOutput, TransferOutput
from pipeline.run import STAGE_ORDER, RunRecord, StageContext, reaches
from pipeline.stages import gate, rollout
from pipeline.storage.base import VersionInfo
from pipeline.storage.manifest import VersionManifest
from tests.support.results import export_output, finished, push_output

CLASSES = ["a", "b"]
Y = np.array([0, 1] * 10)  # 20 held-out examples


def probabilities(correct: int) -> np.ndarray:
    """Predictions for Y with the first `correct` rows right and the rest wrong."""
    predicted = np.where(np.arange(len(Y)) < correct, Y, 1 - Y)
    return np.eye(2, dtype=np.float32)[predicted] * 0.9 + 0.05


@pytest.fixture
def transfer(tmp_path: Path) -> TransferOutput:
    heldout = tmp_path / "heldout.npz"
    np.savez(heldout, x=np.zeros((len(Y), 8, 8, 1), np.float32), y=Y)
    return TransferOutput(model_path=tmp_path / "t.keras", heldout=heldout, report=tmp_path / "r.json",
                          classes=CLASSES, strategy="fine-tune", test_accuracy=0.9, baseline_accuracy=None)


def serving(correct: int | None, version: int = 4):
    """A `served_stable` stand-in: stable v`version` answering with `correct` of 20 right (None: nothing served)."""
    def served(cfg, x):
        assert len(x) == len(Y)  # the whole held-out set is sent
        if correct is None:
            return None, None, "nothing is served yet (no 'stable' version of 'digits' on the docker host)"
        return probabilities(correct), version, None
    return served


def unreachable(cfg, x):
    raise RolloutError("Docker engine at tcp://127.0.0.1:9 unreachable: Connection refused")


def never_asked(cfg, x):
    raise AssertionError("the serving host must not be asked")


def deferred_gate(accuracy: float, max_drop: float = 0.05) -> GateOutput:
    return GateOutput(passed=True, enforced=True, accuracy=accuracy, serving_accuracy=None, serving_version=None,
                      serving_note=gate.DEFERRED, checks=[], report=Path("gate_report.json"),
                      serving_deferred=DeferredComparison(reason=gate.DEFERRED, max_drop_vs_serving=max_drop))


# ----------------------------------------------------------------------------- the decision (pure)


def test_only_a_run_that_stops_before_rollout_defers_and_only_with_a_bar_to_check():
    assert [stage for stage in STAGE_ORDER if reaches(stage, "rollout")] == ["rollout", "verify"]
    assert reaches(None, "rollout")
    for until in STAGE_ORDER:
        deferred = gate.serving_deferral(0.02, until)
        assert (deferred is not None) == (until in ("load", "transfer", "gate", "export", "push")), until
        assert gate.serving_deferral(None, until) is None  # no comparison configured: nothing to defer
    assert gate.serving_deferral(0.02, None) is None  # the whole pipeline: the gate compares itself
    deferred = gate.serving_deferral(0.02, "push")
    assert deferred is not None and deferred.max_drop_vs_serving == 0.02
    assert deferred.reason.startswith("deferred: the run stops before rollout (--until push)")


# ----------------------------------------------------------------------------- the gate stage


def _gate_ctx(tmp_path: Path, transfer: TransferOutput, until: str | None, monkeypatch) -> StageContext:
    cfg = build_config(assignments=["gate.max_drop_vs_serving=0.02", "gate.min_accuracy=0.5",
                                    f"run.workdir={tmp_path / 'work'}"])
    record = RunRecord.new(cfg)
    record.stages["transfer"] = finished(transfer)
    monkeypatch.setattr(gate, "candidate_probabilities", lambda ctx, t, x: probabilities(18))
    return StageContext(cfg, record, Reporter(quiet=True), until_stage=until)


@pytest.mark.parametrize("until", ["push", "export", "gate"])
def test_a_publish_only_run_passes_the_gate_without_asking_serving_and_records_why(
        tmp_path, transfer, monkeypatch, until):
    monkeypatch.setattr(gate, "served_stable", never_asked)
    out = gate.run(_gate_ctx(tmp_path, transfer, until, monkeypatch))
    assert out.passed and out.accuracy == pytest.approx(0.9)
    assert out.serving_deferred is not None and out.serving_deferred.max_drop_vs_serving == 0.02
    assert out.serving_note == out.serving_deferred.reason and out.serving_note.startswith(gate.DEFERRED)
    assert [c["name"] for c in out.checks] == ["min_accuracy"]  # the deferred check is not counted as passed
    report = json.loads(out.report.read_text())
    assert report["serving"] is None and report["serving_deferred"]["reason"].startswith(gate.DEFERRED)
    assert GateOutput.model_validate(out.model_dump(mode="json")) == out  # survives the run record


@pytest.mark.parametrize("until", [None, "rollout", "verify"])
def test_a_run_that_goes_on_to_rollout_still_fails_the_gate_on_an_unreachable_engine(
        tmp_path, transfer, monkeypatch, until):
    monkeypatch.setattr(gate, "served_stable", unreachable)
    with pytest.raises(RolloutError, match="unreachable"):
        gate.run(_gate_ctx(tmp_path, transfer, until, monkeypatch))
    monkeypatch.setattr(gate, "served_stable", serving(20))  # and compares when it answers: 0.9 vs 1.0
    with pytest.raises(GateError, match="accuracy change vs the served stable") as failed:
        gate.run(_gate_ctx(tmp_path, transfer, until, monkeypatch))
    assert failed.value.exit_code == 9


# ----------------------------------------------------------------------------- the deferred comparison


def test_the_deferred_comparison_passes_only_what_serving_positively_accepts(transfer, monkeypatch):
    cfg, notes = build_config(), []
    monkeypatch.setattr(gate, "served_stable", serving(19))  # stable 0.95; candidate 0.9 within 0.05 + eps
    report = gate.run_deferred_comparison(cfg, deferred_gate(0.9, max_drop=0.06), transfer, notes.append)
    assert report is not None and report["passed"] and report["serving_version"] == 4
    assert report["serving_accuracy"] == pytest.approx(0.95) and report["check"]["name"] == "max_drop_vs_serving"
    assert "deferred comparison with serving passed" in notes[-1]

    with pytest.raises(GateError, match=r"quality gate failed: accuracy change vs the served stable \(0.950\) "
                                        r"-0.150 .*deferred at the gate, run before rollout\); nothing is "
                                        "delivered or promoted") as worse:
        gate.run_deferred_comparison(cfg, deferred_gate(0.8), transfer, notes.append)
    assert worse.value.exit_code == 9 and worse.value.details["serving_check"]["passed"] is False

    stricter = build_config(assignments=["gate.max_drop_vs_serving=0.01"])  # the rollout's bar is stricter
    with pytest.raises(GateError, match="max_drop_vs_serving"):
        gate.run_deferred_comparison(stricter, deferred_gate(0.9, max_drop=0.2), transfer, notes.append)
    enforce_off = build_config(assignments=["gate.enforce=false"])  # no override for a deferred check
    with pytest.raises(GateError):
        gate.run_deferred_comparison(enforce_off, deferred_gate(0.8), transfer, notes.append)


def test_nothing_served_passes_and_a_gate_that_deferred_nothing_asks_nothing(transfer, monkeypatch):
    notes: list[str] = []
    monkeypatch.setattr(gate, "served_stable", serving(None))
    report = gate.run_deferred_comparison(build_config(), deferred_gate(0.5), transfer, notes.append)
    assert report is not None and report["passed"] and report["check"] is None
    assert "nothing is served yet" in notes[-1]
    monkeypatch.setattr(gate, "served_stable", never_asked)
    ran = deferred_gate(0.5).model_copy(update={"serving_deferred": None})
    assert gate.run_deferred_comparison(build_config(), ran, transfer, notes.append) is None


@pytest.mark.parametrize(("served", "fragment"), [
    (unreachable, "could not read the serving host: Docker engine at tcp://127.0.0.1:9 unreachable"),
    (lambda cfg, x: (_ for _ in ()).throw(GateError("quality gate: could not evaluate the served digits v4 "
                                                    "at 127.0.0.1:8500: DEADLINE_EXCEEDED")),
     "failed: could not evaluate the served digits v4"),
    (lambda cfg, x: (np.full((len(Y), 2), np.nan, np.float32), 4, None), "cannot be scored"),
    (lambda cfg, x: (_ for _ in ()).throw(ConnectionResetError("reset by peer")), "ConnectionResetError"),
])
def test_a_deferred_comparison_that_cannot_run_is_a_gate_failure(transfer, monkeypatch, served, fragment):
    monkeypatch.setattr(gate, "served_stable", served)
    with pytest.raises(GateError, match="the comparison with serving deferred at the gate") as failed:
        gate.run_deferred_comparison(build_config(), deferred_gate(0.9), transfer, lambda line: None)
    assert fragment in str(failed.value) and "nothing is delivered or promoted" in str(failed.value)
    assert failed.value.exit_code == 9


def test_a_missing_held_out_set_fails_the_deferred_comparison(transfer, monkeypatch):
    monkeypatch.setattr(gate, "served_stable", never_asked)
    transfer.heldout.unlink()
    with pytest.raises(GateError, match="held-out set .* is unreadable"):
        gate.run_deferred_comparison(build_config(), deferred_gate(0.9), transfer, lambda line: None)


# ----------------------------------------------------------------------------- who runs it: the rollout


def _record(cfg, transfer: TransferOutput, gate_output: GateOutput, version: int = 5) -> RunRecord:
    record = RunRecord.new(cfg)
    record.stages["transfer"] = finished(transfer)
    record.stages["gate"] = finished(gate_output)
    record.stages["export"] = finished(export_output(Path("exports/digits") / str(version)))
    record.stages["push"] = finished(push_output("digits", version))
    return record


def test_the_rollout_stage_runs_the_owed_comparison_before_touching_the_serving_target(
        tmp_path, transfer, monkeypatch):
    cfg = build_config(assignments=[f"run.workdir={tmp_path / 'work'}", "rollout.model_base_path=s3://b/m"])
    opened: list[str] = []
    monkeypatch.setattr(rollout, "open_engine", lambda *a, **k: opened.append("session") or 1 / 0)
    monkeypatch.setattr(gate, "served_stable", unreachable)
    ctx = StageContext(cfg, _record(cfg, transfer, deferred_gate(0.9)), Reporter(quiet=True))
    with pytest.raises(GateError, match="comparison with serving deferred at the gate could not read") as failed:
        rollout.run(ctx)
    assert failed.value.exit_code == 9 and opened == []  # nothing delivered, nothing promoted
    monkeypatch.setattr(gate, "served_stable", serving(20))  # stable 1.0, candidate 0.9 > 0.05 below
    with pytest.raises(GateError, match="quality gate failed"):
        rollout.run(ctx)
    assert opened == []
    monkeypatch.setattr(gate, "served_stable", serving(19))  # within the bar: on to the session
    with pytest.raises(ZeroDivisionError):
        rollout.run(ctx)
    assert opened == ["session"]


class _Store:
    """The one store call `check_before_rollout` makes: a version's manifest."""

    uri = "file://store"

    def __init__(self, quality_gate: dict | None, run_id: str | None = None) -> None:
        export = {} if quality_gate is None else {"quality_gate": quality_gate, "run_id": run_id}
        self.manifest = VersionManifest(model_name="digits", version=5, files=[], export=export)

    def list_versions(self, model, version):
        return [VersionInfo(model, version, True, 1, 1, 0.0, "file://store/digits/5", manifest=self.manifest)]


def test_tfrollout_rollout_of_a_deferred_version_needs_its_run_record(tmp_path, transfer, monkeypatch):
    from pipeline.run import save_record

    cfg = build_config(assignments=[f"run.workdir={tmp_path / 'work'}"])
    owed = {"passed": True, "serving_deferred": {"reason": gate.DEFERRED, "max_drop_vs_serving": 0.05}}
    monkeypatch.setattr(gate, "served_stable", serving(20))
    with pytest.raises(GateError, match="v5's comparison with serving was deferred at its gate .* no run record"):
        rollout.check_before_rollout(cfg, _Store(owed), "digits", 5, lambda line: None)  # another checkout
    assert rollout.check_before_rollout(cfg, _Store({"passed": True}), "digits", 5, lambda line: None) is None
    assert rollout.check_before_rollout(cfg, _Store(None), "digits", 5, lambda line: None) is None

    record = _record(cfg, transfer, deferred_gate(0.9))
    save_record(cfg, record)  # the checkout that exported v5: its held-out set is here
    with pytest.raises(GateError, match="quality gate failed: accuracy change"):
        rollout.check_before_rollout(cfg, _Store(owed, record.run_id), "digits", 5, lambda line: None)
    monkeypatch.setattr(gate, "served_stable", serving(19))
    checked = rollout.check_before_rollout(cfg, _Store(owed, record.run_id), "digits", 5, lambda line: None)
    assert checked is not None and checked["passed"] and checked["serving_version"] == 4
    with pytest.raises(GateError, match="no run record"):  # a record of another run with that number
        rollout.check_before_rollout(cfg, _Store(owed, "another-run"), "digits", 5, lambda line: None)
    with pytest.raises(GateError, match="no run record"):
        rollout.check_before_rollout(cfg, _Store(owed, record.run_id), "digits", 6, lambda line: None)
