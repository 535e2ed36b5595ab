"""export stage: the transferred model as `<export_root>/<name>/<version>/` for TF Serving."""

from __future__ import annotations

import numpy as np

from pipeline.run import StageContext
from pipeline.stages.results import ExportOutput, LoadOutput, TransferOutput


def run(ctx: StageContext) -> ExportOutput:
    import keras  # TensorFlow: only when the stage runs

    from pipeline.model.exporter import GOLDEN_FILE, MANIFEST_FILE, ExportSpec, export_model

    cfg = ctx.config.export
    transferred = ctx.output(TransferOutput)
    loaded = ctx.output(LoadOutput)
    model = ctx.transferred_model or keras.models.load_model(transferred.model_path)
    with np.load(transferred.heldout) as heldout:
        heldout_x = heldout["x"]
    spec = ExportSpec(root=cfg.root, model_name=cfg.model_name, version=cfg.version,
                      input_name=cfg.input_name, output_name=cfg.output_name,
                      warmup_records=cfg.warmup_records, golden_size=cfg.golden_size,
                      parity_atol=cfg.parity_atol)
    metadata = {
        "source_model": {"path": str(loaded.path), "format": loaded.format, "sha256": loaded.sha256,
                         "cut_layer": loaded.cut_layer},
        "classes": transferred.classes,
        "metrics": {"test_accuracy": transferred.test_accuracy,
                    "baseline_test_accuracy": transferred.baseline_accuracy,
                    "strategy": transferred.strategy},
        "run_id": ctx.record.run_id,
    }
    result = export_model(model, spec, heldout_x, metadata)
    ctx.reporter.note(f"exported {cfg.model_name} version {result.version} to {result.version_dir} "
                      f"(parity max abs diff {result.max_abs_diff:.2g})")
    version_dir = result.version_dir.resolve()
    return ExportOutput(model_name=cfg.model_name, version=result.version, version_dir=version_dir,
                        export_root=cfg.root.resolve(), manifest=version_dir / MANIFEST_FILE,
                        golden=version_dir / GOLDEN_FILE, signature=result.signature,
                        parity_max_abs_diff=result.max_abs_diff)
