"""load stage: read the local source model and check it can be cut into base + head."""

from __future__ import annotations

from pipeline.model.source import load_source_model
from pipeline.results import LoadOutput
from pipeline.run import StageContext


def run(ctx: StageContext) -> LoadOutput:
    cfg = ctx.config.model
    source = load_source_model(cfg.path, cfg.cut_layer, signature=cfg.signature, output_key=cfg.output_key)
    ctx.source_model = source
    model = source.model
    feature_shape = (model.get_layer(source.cut_layer).output.shape if source.cut_layer
                     else model.output.shape)
    ctx.reporter.note(f"loaded {source.format} model {cfg.path} ({len(model.layers)} layers, "
                      f"input {tuple(model.input_shape)}), cut at {source.cut_layer or '(output)'}")
    return LoadOutput(path=cfg.path.resolve(), format=source.format, sha256=source.sha256,
                      input_shape=list(model.input_shape[1:]), cut_layer=source.cut_layer,
                      feature_shape=list(feature_shape[1:]), num_layers=len(model.layers))
