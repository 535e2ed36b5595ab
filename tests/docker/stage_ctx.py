"""Run the real rollout stage with a run record holding export/push outputs (no training)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DeployConfig
from pipeline.progress import Reporter
from pipeline.run import RunRecord, StageContext, StageResult


def run_rollout_stage(cfg: DeployConfig, version: int, golden: Path | None = None) -> dict:
    from pipeline.stages import rollout

    record = RunRecord.new(cfg)
    record.stages["export"] = StageResult("ok", "", 0.0, {"model_name": "digits", "version": version,
                                                           "golden": str(golden or "missing.npz")})
    record.stages["push"] = StageResult("ok", "", 0.0, {"model_name": "digits", "version": version})
    return rollout.run(StageContext(cfg, record, Reporter(quiet=True)))
