"""Push stage: publish the exported version to the configured store (see `pipeline.storage`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.run import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    """Push `<export_root>/<name>/<version>` to `storage.uri`; returns the push report."""
    from pipeline.storage.publish import open_and_hash, push_configured

    export = ctx.outputs("export")
    cfg = ctx.config.storage
    model, version = str(export["model_name"]), int(export["version"])
    version_dir = Path(export["version_dir"])
    store, local = open_and_hash(cfg, version_dir, model, version)
    ctx.reporter.note(f"pushing {model} v{version} to {store.uri}")
    result = push_configured(store, cfg, version_dir, model, version, local=local,
                             progress=lambda total: ctx.reporter.progress(f"push {model}/{version}", total,
                                                                          unit="bytes"))
    if result.already_committed:
        ctx.reporter.note(f"{model} v{version} already committed with identical content: 0 bytes sent")
    else:
        ctx.reporter.note(f"committed {result.uri}: {result.files_uploaded} files / "
                          f"{result.bytes_uploaded} bytes sent, {result.files_skipped} already there")
    return result.to_json()
