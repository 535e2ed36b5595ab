"""export stage: the transferred model as `<export_root>/<name>/<version>/` for TF Serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.run import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    import keras

    from pipeline.model.exporter import GOLDEN_FILE, MANIFEST_FILE, ExportSpec, export_model

    cfg = ctx.config.export
    transferred = ctx.outputs("transfer")
    loaded = ctx.outputs("load")
    model = ctx.memo.get("transferred") or keras.models.load_model(transferred["model_path"])
    with np.load(transferred["heldout"]) as heldout:
        heldout_x = heldout["x"]
    report = json.loads(Path(transferred["report"]).read_text())
    spec = ExportSpec(root=cfg.root, model_name=cfg.model_name, version=cfg.version,
                      input_name=cfg.input_name, output_name=cfg.output_name,
                      warmup_records=cfg.warmup_records, golden_size=cfg.golden_size,
                      parity_atol=cfg.parity_atol)
    metadata = {
        "source_model": {"path": loaded["path"], "format": loaded["format"], "sha256": loaded["sha256"],
                         "cut_layer": loaded["cut_layer"]},
        "classes": transferred["classes"],
        "metrics": {"test_accuracy": report["transfer"]["test_accuracy"],
                    "baseline_test_accuracy": (report["baseline"] or {}).get("test_accuracy"),
                    "strategy": report["strategy"]},
        "run_id": ctx.record.run_id,
    }
    result = export_model(model, spec, heldout_x, metadata)
    ctx.reporter.note(f"exported {cfg.model_name} version {result.version} to {result.version_dir} "
                      f"(parity max abs diff {result.max_abs_diff:.2g})")
    return {
        "model_name": cfg.model_name,
        "version": result.version,
        "version_dir": str(result.version_dir.resolve()),
        "export_root": str(cfg.root.resolve()),
        "manifest": str((result.version_dir / MANIFEST_FILE).resolve()),
        "golden": str((result.version_dir / GOLDEN_FILE).resolve()),
        "signature": result.signature,
        "parity_max_abs_diff": result.max_abs_diff,
    }
