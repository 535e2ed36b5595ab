"""The `tfrollout` command: parse flags, load config, call the pipeline, report.

Heavy imports (TensorFlow, boto3, docker) stay inside the stage modules so that
`tfrollout --help` and `tfrollout config check` answer instantly. Extra command
groups live in `pipeline/commands/<name>.py`, each exposing `register(app)`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipeline.config import DeployConfig, load_config
from pipeline.errors import TfRolloutError
from pipeline.progress import Reporter
from pipeline.quiet import import_tensorflow_quietly

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would bury the one-line errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

app = typer.Typer(
    name="tfrollout",
    help="Take a Keras model from a laptop to a verified TF Serving endpoint.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
demo_app = typer.Typer(help="Offline demo assets (scikit-learn digits).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(demo_app, name="demo")

# Options shared by every command that reads the config.
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: ./deploy.toml if present)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key: --set transfer.head_epochs=50 (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON report on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]

T = TypeVar("T")


def fail(message: str, code: int, *, as_json: bool, extra: dict[str, Any] | None = None) -> typer.Exit:
    """Print one error line on stderr (and a JSON error report when asked)."""
    typer.echo(f"error: {message}", err=True)
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message, **(extra or {})}, indent=2))
    return typer.Exit(code)


def guarded(fn: Callable[[], T], *, debug: bool, as_json: bool,
            on_error: Callable[[], dict[str, Any]] | None = None) -> T:
    """Run `fn`, turning expected errors into one line + exit code (traceback only with --debug)."""
    try:
        return fn()
    except TfRolloutError as exc:
        if debug:
            traceback.print_exc()
        raise fail(str(exc), exc.exit_code, as_json=as_json,
                   extra=on_error() if on_error else None) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130, as_json=as_json) from None
    except Exception as exc:  # noqa: BLE001 - last-resort: still one line unless --debug
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        raise fail(f"internal error: {type(exc).__name__}: {exc}{hint}", 1, as_json=as_json) from None


def resolve_config(config: Path | None, assignments: list[str] | None, *,
                   debug: bool, as_json: bool, extra: list[str] | None = None) -> DeployConfig:
    return guarded(lambda: load_config(config, [*(assignments or []), *(extra or [])]),
                   debug=debug, as_json=as_json)


def emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


# --------------------------------------------------------------------------- config


@config_app.command("check")
def config_check(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
                 debug: DebugOpt = False) -> None:
    """Validate the config and print it fully resolved (defaults, file, env, flags)."""
    cfg = resolve_config(config, set_, debug=debug, as_json=as_json)
    data = cfg.model_dump(mode="json")
    if as_json:
        emit({"ok": True, "config": data})
        return
    for section, values in data.items():
        typer.echo(f"[{section}]")
        for key, value in values.items():
            typer.echo(f"{key} = {json.dumps(value)}")
        typer.echo("")


# --------------------------------------------------------------------------- demo


@demo_app.command("source-model")
def demo_source_model(
    out: Annotated[Path, typer.Option(help="Where to write the .keras source model.")] = Path(
        "demo/source_model.keras"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the demo source model (digits 0-4) offline and save it as .keras."""

    def work() -> dict[str, Any]:
        import_tensorflow_quietly(debug)
        from pipeline.model.demo import train_source_model

        return train_source_model(out, epochs=epochs, seed=seed, reporter=Reporter(quiet=as_json))

    result = guarded(work, debug=debug, as_json=as_json)
    if as_json:
        emit({"ok": True, **result})
    else:
        typer.echo(f"source model: {result['path']} (accuracy on held-out digits 0-4: "
                   f"{result['test_accuracy']:.3f})")


# --------------------------------------------------------------------------- deploy


def _deploy(config: Path | None, set_: list[str] | None, *, from_stage: str | None,
            until_stage: str | None, fresh: bool, as_json: bool, debug: bool,
            extra: list[str]) -> None:
    from pipeline.run import load_record, run_pipeline

    cfg = resolve_config(config, set_, debug=debug, as_json=as_json, extra=extra)
    reporter = Reporter(quiet=False)

    def partial_report() -> dict[str, Any]:
        record = load_record(cfg)
        return record.to_json() if record else {}

    def work() -> Any:
        import_tensorflow_quietly(debug)
        return run_pipeline(cfg, reporter, from_stage=from_stage, until_stage=until_stage, fresh=fresh)

    summary = guarded(work,
                      debug=debug, as_json=as_json, on_error=partial_report)
    if as_json:
        emit(summary.to_json())
        return
    from pipeline.summary import render_summary

    render_summary(summary, reporter.console)


def _stage_overrides(version: int | None, no_baseline: bool) -> list[str]:
    extra = []
    if version is not None:
        extra.append(f"export.version={version}")
    if no_baseline:
        extra.append("transfer.baseline=false")
    return extra


VersionOpt = Annotated[int | None, typer.Option("--version", min=1,
                                                help="Pin the export version (refused if it exists).")]
NoBaselineOpt = Annotated[bool, typer.Option("--no-baseline",
                                             help="Skip the from-scratch baseline comparison.")]


@app.command()
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
    _deploy(config, set_, from_stage=from_stage, until_stage=until_stage, fresh=fresh,
            as_json=as_json, debug=debug, extra=_stage_overrides(version, no_baseline))


def _single_stage_command(stage: str, doc: str) -> None:
    def command(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        version: VersionOpt = None,
        no_baseline: NoBaselineOpt = False,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        _deploy(config, set_, from_stage=stage, until_stage=stage, fresh=False,
                as_json=as_json, debug=debug, extra=_stage_overrides(version, no_baseline))

    command.__doc__ = doc
    app.command(name=stage)(command)


_single_stage_command("load", "Load and check the source model (uses the last run's record).")
_single_stage_command("transfer", "Transfer + fine-tune on the target data (needs `load`).")
_single_stage_command("export", "Export the versioned SavedModel (needs `transfer`).")


def _register_command_modules() -> None:
    """Mount every `pipeline.commands.<name>` module that exposes `register(app)`."""
    import pipeline.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"pipeline.commands.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_command_modules()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tfrollout")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
