"""push stage: publish the exported version to the configured store (see `pipeline.storage`)."""

from __future__ import annotations

from pipeline.results import ExportOutput, PushOutput
from pipeline.run import StageContext
from pipeline.storage.publish import open_and_hash, push_configured
from pipeline.verify.golden import refuse_non_finite_golden


def run(ctx: StageContext) -> PushOutput:
    """Push `<export_root>/<name>/<version>` to `storage.uri`; returns the push report."""
    export = ctx.output(ExportOutput)
    cfg = ctx.config.storage
    model, version = export.model_name, export.version
    refuse_non_finite_golden(export.version_dir, ctx.config.verify.allow_non_finite)
    store, local = open_and_hash(cfg, export.version_dir, model, version)
    ctx.reporter.note(f"pushing {model} v{version} to {store.uri}")
    result = push_configured(store, cfg, export.version_dir, model, version, local=local,
                             progress=lambda total: ctx.reporter.progress(f"push {model}/{version}", total,
                                                                          unit="bytes"))
    if result.already_committed:
        ctx.reporter.note(f"{model} v{version} already committed with identical content: 0 bytes sent")
    else:
        ctx.reporter.note(f"committed {result.uri}: {result.files_uploaded} files / "
                          f"{result.bytes_uploaded} bytes sent, {result.files_skipped} already there")
    return result
