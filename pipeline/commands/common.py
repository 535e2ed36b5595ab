"""What every command shares: option types, config loading, JSON output, and the one error handler.

Commands are plain module-level functions. They raise `TfRolloutError`s; `handle_errors`
(applied to every command by `pipeline.cli` when it mounts them) turns those into one
`error:` line, the error's exit code and — with `--json` — a JSON error report.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipeline.config import DeployConfig, load_config
from pipeline.errors import FileSystemError, TfRolloutError, describe_os_error
from pipeline.redaction import redact_text, redacted

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
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name (default: the last run's, "
                                                              "else export.model_name).")]

F = TypeVar("F", bound=Callable[..., Any])
OS_ERROR_EXIT = FileSystemError.exit_code  # EX_IOERR: an I/O error outside the pipeline's own checks


def load_cfg(config: Path | None, assignments: list[str] | None, extra: list[str] | None = None) -> DeployConfig:
    """The resolved config (file < env < --set < `extra`); deprecated keys are warned about on stderr."""
    cfg = load_config(config, [*(assignments or []), *(extra or [])])
    for warning in cfg.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return cfg


def emit(payload: dict[str, Any]) -> None:
    """The `--json` report on stdout (secrets masked: it ends up in CI logs and artifacts)."""
    typer.echo(json.dumps(redacted(json.loads(json.dumps(payload, default=str))), indent=2))


def fail(message: str, code: int, *, as_json: bool, details: dict[str, Any] | None = None) -> typer.Exit:
    """Print one error line on stderr (and a JSON error report when asked); return the Exit to raise."""
    message = redact_text(message)
    typer.echo(f"error: {message}", err=True)
    if as_json:
        emit({"ok": False, "error": message, **(details or {})})
    return typer.Exit(code)


def handle_errors(command: F) -> F:
    """Expected errors -> one line + exit code; anything else -> `internal error` (traceback with --debug).

    Reads the command's own `as_json` / `debug` arguments, so commands need no try/except.
    """

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        as_json, debug = bool(kwargs.get("as_json")), bool(kwargs.get("debug"))
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TfRolloutError as exc:
            if debug:
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code, as_json=as_json, details=exc.details) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130, as_json=as_json) from None
        except OSError as exc:  # disk full, read-only, permissions: the file at fault, not a traceback
            if debug:
                traceback.print_exc()
            raise fail(describe_os_error(exc), OS_ERROR_EXIT, as_json=as_json) from None
        except Exception as exc:  # noqa: BLE001 - last resort: still one line unless --debug
            if debug:
                traceback.print_exc()
            hint = "" if debug else " (run with --debug for the traceback)"
            raise fail(f"internal error: {type(exc).__name__}: {exc}{hint}", 1, as_json=as_json) from None

    return run  # type: ignore[return-value]


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as storage tools print them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
