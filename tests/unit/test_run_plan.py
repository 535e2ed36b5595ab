import json

import pytest

from pipeline.config import build_config
from pipeline.errors import StageOrderError
from pipeline.results import LoadOutput, TransferOutput
from pipeline.run import (
    STAGE_ORDER,
    RunRecord,
    StageResult,
    load_record,
    plan_run,
    save_record,
    select_stages,
)
from tests.support.results import sample_output


def _record(cfg, done):
    record = RunRecord.new(cfg)
    for name, status in done.items():
        output = sample_output(name) if status == "ok" else None
        record.stages[name] = StageResult(status, "t", 1.0, output=output, error=None if output else "boom")
    return record


def test_select_slices_inclusive():
    assert select_stages(None, None) == list(STAGE_ORDER)
    assert select_stages("transfer", "transfer") == ["transfer"]
    assert select_stages(None, "transfer") == ["load", "transfer"]


def test_select_rejects_unknown_and_reversed():
    with pytest.raises(StageOrderError, match="unknown stage 'deplo'"):
        select_stages("deplo", None)
    with pytest.raises(StageOrderError, match="comes after"):
        select_stages("export", "load")


def test_failed_run_with_same_config_resumes_at_failed_stage():
    cfg = build_config()
    previous = _record(cfg, {"load": "ok", "transfer": "failed"})
    record, start = plan_run(previous, cfg, None, fresh=False)
    assert record.run_id == previous.run_id
    assert start == "transfer"
    assert "transfer" not in record.stages and "load" in record.stages


def test_completed_run_starts_a_new_one():
    cfg = build_config()
    previous = _record(cfg, {name: "ok" for name in STAGE_ORDER})
    record, start = plan_run(previous, cfg, None, fresh=False)
    assert record.run_id != previous.run_id and start is None and not record.stages


def test_changed_config_or_fresh_does_not_resume():
    cfg = build_config()
    previous = _record(cfg, {"load": "ok", "transfer": "failed"})
    other = build_config({}, {}, ["transfer.seed=7"])
    assert plan_run(previous, other, None, fresh=False)[1] is None
    assert plan_run(previous, cfg, None, fresh=True)[1] is None


def test_from_stage_keeps_earlier_outputs_and_drops_later():
    cfg = build_config()
    previous = _record(cfg, {"load": "ok", "transfer": "ok", "export": "ok"})
    record, start = plan_run(previous, cfg, "transfer", fresh=False)
    assert start == "transfer"
    assert list(record.stages) == ["load"]
    assert record.output(LoadOutput) == sample_output("load")
    with pytest.raises(StageOrderError, match="transfer"):
        record.output(TransferOutput)


def test_from_later_stage_without_record_is_an_error():
    with pytest.raises(StageOrderError, match="no earlier run record"):
        plan_run(None, build_config(), "export", fresh=False)


def test_record_round_trips_through_json():
    cfg = build_config()
    record = _record(cfg, {"load": "ok"})
    again = RunRecord.from_json(record.to_json())
    assert again.to_json() == record.to_json()


def test_every_stage_result_round_trips_as_its_own_type(tmp_path):
    cfg = build_config({"run": {"workdir": str(tmp_path)}})
    save_record(cfg, _record(cfg, {name: "ok" for name in STAGE_ORDER}))
    again = load_record(cfg)
    assert again is not None
    for name in STAGE_ORDER:
        output = again.stages[name].output
        assert type(output) is type(sample_output(name)) and output == sample_output(name)


def test_a_record_whose_results_do_not_fit_is_no_record(tmp_path):
    """A record from a release with other result fields must not break a stage later: start afresh."""
    cfg = build_config({"run": {"workdir": str(tmp_path)}})
    record = _record(cfg, {"load": "ok"})
    data = record.to_json()
    data["stages"]["load"]["outputs"]["renamed_field"] = data["stages"]["load"]["outputs"].pop("sha256")
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert load_record(cfg) is None


def test_partial_run_continues_when_more_stages_are_asked_for():
    cfg = build_config()
    previous = _record(cfg, {"load": "ok", "transfer": "ok"})
    # `deploy --until transfer` again: that range is done, so a new run starts.
    assert plan_run(previous, cfg, None, fresh=False, until_stage="transfer")[1] is None
    # plain `deploy`: continue the same run after the finished stages.
    record, start = plan_run(previous, cfg, None, fresh=False)
    assert record.run_id == previous.run_id and start == STAGE_ORDER[2]


def test_resume_drops_results_after_the_restart_point():
    cfg = build_config()
    previous = _record(cfg, {"load": "ok", "transfer": "failed", "export": "ok"})
    record, start = plan_run(previous, cfg, None, fresh=False)
    assert start == "transfer" and list(record.stages) == ["load"]
