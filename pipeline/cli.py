"""The `tfrollout` command: one table of commands, mounted lazily, one error handler.

Every command is a plain function (or a Typer group) in `pipeline/commands/<topic>.py`.
`COMMANDS` below is the only place they are registered. A command's module is imported
only when that command runs (or `--help` lists them), so `tfrollout push` never pays
for gRPC or numpy, and `tfrollout status` never for TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

from pipeline.commands.common import handle_errors

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would bury the one-line errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
logging.getLogger("tensorflow").setLevel(logging.ERROR)

# command name -> (module, attribute): a function (one command) or a typer.Typer (a group).
COMMANDS: dict[str, tuple[str, str]] = {
    "deploy": ("pipeline.commands.deploy", "deploy"),
    "load": ("pipeline.commands.deploy", "load"),
    "transfer": ("pipeline.commands.deploy", "transfer"),
    "gate": ("pipeline.commands.deploy", "gate"),
    "export": ("pipeline.commands.deploy", "export"),
    "config": ("pipeline.commands.deploy", "config_app"),
    "demo": ("pipeline.commands.deploy", "demo_app"),
    "push": ("pipeline.commands.store", "push"),
    "storage": ("pipeline.commands.store", "storage_app"),
    "rollout": ("pipeline.commands.runtime", "rollout"),
    "rollback": ("pipeline.commands.runtime", "rollback"),
    "status": ("pipeline.commands.runtime", "status"),
    "serve": ("pipeline.commands.runtime", "serve_app"),
    "verify": ("pipeline.commands.query", "verify"),
    "predict": ("pipeline.commands.query", "predict"),
    "loadtest": ("pipeline.commands.query", "loadtest"),
}


# Typer builds commands on its own copy of click, so they are duck-typed here (`Any`).


def _with_error_handling(command: Any) -> Any:
    """Wrap every leaf command's callback in `handle_errors` (the CLI's one error handler)."""
    subcommands = getattr(command, "commands", None)
    if isinstance(subcommands, dict):
        for sub in subcommands.values():
            _with_error_handling(sub)
    elif command.callback is not None and not getattr(command.callback, "_tfrollout_handled", False):
        command.callback = handle_errors(command.callback)
        command.callback._tfrollout_handled = True
    return command


def mount(name: str) -> Any:
    """Import one command's module and turn its function or Typer group into a click command."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if not isinstance(target, typer.Typer):
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        target = single
    command = typer.main.get_command(target)
    command.name = name
    return _with_error_handling(command)


class LazyCommands(TyperGroup):
    """A click group whose sub-commands come from `COMMANDS`, imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return mount(cmd_name) if cmd_name in COMMANDS else None


app = typer.Typer(
    name="tfrollout",
    cls=LazyCommands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


EPILOG = ("Stages, in order: load, transfer, gate, export, push, rollout, verify.  "
          "Exit codes: 0 ok; 1 internal error; 2 config or usage; 3 model or data; 4 transfer; "
          "5 export; 6 storage; 7 rollout; 8 verify; 9 quality gate; 74 file system; "
          "status only: 10 not running, 11 degraded, 12 unreachable.")


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"tfrollout {version('tfrollout')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("tfrollout (not installed)")
        raise typer.Exit(0)


@app.callback(epilog=EPILOG)
def tfrollout(
    show_version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """Take a Keras model from a laptop to a verified TF Serving endpoint."""


def main() -> None:
    """Console-script entry point."""
    app(prog_name="tfrollout")


if __name__ == "__main__":  # pragma: no cover
    main()
