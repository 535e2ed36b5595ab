"""Run the real rollout stage with a run record holding export/push outputs (no training)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DeployConfig
from pipeline.progress import Reporter
from pipeline.results import RolloutOutput
from pipeline.run import RunRecord, StageContext
from tests.support.results import export_output, finished, push_output


def run_rollout_stage(cfg: DeployConfig, version: int, golden: Path | None = None) -> RolloutOutput:
    from pipeline.stages import rollout

    record = RunRecord.new(cfg)
    record.stages["export"] = finished(export_output(Path("exports/digits") / str(version),
                                                     golden=golden or Path("missing.npz")))
    record.stages["push"] = finished(push_output("digits", version))
    return rollout.run(StageContext(cfg, record, Reporter(quiet=True)))
