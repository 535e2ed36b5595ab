"""`tfrollout deploy | load | transfer | export`, `config check`, `demo source-model`.

The stages import TensorFlow; `import_tensorflow_quietly` runs first so its C++
start-up lines never bury the one-line errors (the only lazy import here: the demo's
training code, which is TensorFlow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.commands.common import ConfigOpt, DebugOpt, JsonOpt, SetOpt, emit, load_cfg
from pipeline.config import DeployConfig
from pipeline.model.demo import DEMO_SOURCE_EPOCHS
from pipeline.progress import Reporter
from pipeline.quiet import import_tensorflow_quietly
from pipeline.redaction import redacted
from pipeline.run import RunSummary, run_pipeline
from pipeline.summary import render_summary

VersionOpt = Annotated[int | None, typer.Option("--version", min=1,
                                                help="Pin the export version (refused if it exists).")]
NoBaselineOpt = Annotated[bool, typer.Option("--no-baseline",
                                             help="Skip the from-scratch baseline comparison.")]


def stage_overrides(version: int | None, no_baseline: bool) -> list[str]:
    """The deploy flags that are config keys, as `--set` assignments."""
    extra = []
    if version is not None:
        extra.append(f"export.version={version}")
    if no_baseline:
        extra.append("transfer.baseline=false")
    return extra


def run_stages(cfg: DeployConfig, *, from_stage: str | None, until_stage: str | None, fresh: bool,
               debug: bool) -> RunSummary:
    """The pipeline (or a slice of it) with progress on stderr."""
    import_tensorflow_quietly(debug)
    return run_pipeline(cfg, Reporter(quiet=False), from_stage=from_stage, until_stage=until_stage,
                        fresh=fresh)


def _report(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        emit(summary.to_json())
    else:
        render_summary(summary, Reporter().console)


def deploy(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Start at this stage.")] = None,
    until_stage: Annotated[str | None, typer.Option("--until", help="Stop after this stage.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Do not resume an unfinished run.")] = False,
    version: VersionOpt = None,
    no_baseline: NoBaselineOpt = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the stages in order (resuming an unfinished run with the same config)."""
    cfg = load_cfg(config, set_, stage_overrides(version, no_baseline))
    summary = run_stages(cfg, from_stage=from_stage, until_stage=until_stage, fresh=fresh, debug=debug)
    _report(summary, as_json)


def _one_stage(stage: str, config: Path | None, set_: list[str] | None, version: int | None,
               no_baseline: bool, as_json: bool, debug: bool) -> None:
    cfg = load_cfg(config, set_, stage_overrides(version, no_baseline))
    _report(run_stages(cfg, from_stage=stage, until_stage=stage, fresh=False, debug=debug), as_json)


def load(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
         debug: DebugOpt = False) -> None:
    """Load and check the source model."""
    _one_stage("load", config, set_, None, False, as_json, debug)


def transfer(config: ConfigOpt = None, set_: SetOpt = None, no_baseline: NoBaselineOpt = False,
             as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Transfer + fine-tune on the target data (uses the last run's `load`)."""
    _one_stage("transfer", config, set_, None, no_baseline, as_json, debug)


def gate(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
         debug: DebugOpt = False) -> None:
    """Check the transferred model against the quality gate (uses the last run's `transfer`)."""
    _one_stage("gate", config, set_, None, False, as_json, debug)


def export(config: ConfigOpt = None, set_: SetOpt = None, version: VersionOpt = None,
           as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Export the versioned SavedModel (uses the last run's `transfer`)."""
    _one_stage("export", config, set_, version, False, as_json, debug)


# A group callback keeps `config` and `demo` groups even with one sub-command each.
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True,
                         add_completion=False, callback=lambda: None)


@config_app.command("check")
def config_check(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
                 debug: DebugOpt = False) -> None:
    """Validate the config and print it fully resolved (defaults, file, env, flags)."""
    data = redacted(load_cfg(config, set_).model_dump(mode="json"))
    if as_json:
        emit({"ok": True, "config": data})
        return
    for section, values in data.items():
        typer.echo(f"[{section}]")
        for key, value in values.items():
            typer.echo(f"{key} = {json.dumps(value)}")
        typer.echo("")


demo_app = typer.Typer(help="Offline demo assets (printed digits from matplotlib's fonts).", no_args_is_help=True,
                       add_completion=False, callback=lambda: None)


@demo_app.command("source-model")
def demo_source_model(
    out: Annotated[Path, typer.Option(help="Where to write the .keras source model.")] = Path(
        "demo/source_model.keras"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = DEMO_SOURCE_EPOCHS,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the demo source model (printed digits 0-9) offline and save it as .keras."""
    import_tensorflow_quietly(debug)
    from pipeline.model.demo import train_source_model  # TensorFlow

    result = train_source_model(out, epochs=epochs, seed=seed, reporter=Reporter(quiet=as_json))
    if as_json:
        emit({"ok": True, **result})
    else:
        typer.echo(f"source model: {result['path']} (accuracy on held-out printed digits: "
                   f"{result['test_accuracy']:.3f})")


@demo_app.command("sample")
def demo_sample(
    out: Annotated[Path, typer.Option(help="Where to write the inputs (.npy) for `tfrollout predict -i`.")] = Path(
        "x.npy"),
    count: Annotated[int, typer.Option(min=1, max=1797, help="How many handwritten digits.")] = 4,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a few handwritten digits as the demo model's signature takes them (8x8x1 float32 in [0, 1]),
    with their true digits, so `tfrollout predict -i x.npy` has something real to send."""
    import numpy as np

    from pipeline.model.data import load_digits_arrays

    x, y = load_digits_arrays()
    picked = np.linspace(0, len(x) - 1, count).round().astype(int)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x[picked].astype(np.float32))
    digits = [int(d) for d in y[picked]]
    if as_json:
        emit({"ok": True, "path": str(out), "shape": list(x[picked].shape), "digits": digits})
    else:
        typer.echo(f"wrote {out}: {count} handwritten digits {digits} as float32 {list(x[picked].shape)[1:]}")
