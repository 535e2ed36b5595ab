"""Error types the CLI turns into one clear line and a non-zero exit.

Every failure a user can cause (bad file, bad config, unreachable host) is raised
as a `TfRolloutError` subclass with a message that names the thing at fault, so
the CLI never has to show a traceback unless `--debug` asks for one.
"""

from __future__ import annotations

from typing import Any


class TfRolloutError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user.

    `details` (optional) is merged into the `--json` error report, e.g. the run record
    of a failed deploy or the steps of a failed rollout.
    """

    exit_code: int = 1
    details: dict[str, Any] | None = None


class ConfigError(TfRolloutError):
    """The configuration (file, environment or flags) is invalid."""

    exit_code = 2


class ModelLoadError(TfRolloutError):
    """The source model is missing, unsupported, corrupt or lacks the cut layer."""

    exit_code = 3


class DataError(TfRolloutError):
    """Target-domain data is missing, malformed or does not fit the model."""

    exit_code = 3


class TransferError(TfRolloutError):
    """Transfer learning could not be set up or run."""

    exit_code = 4


class GateError(TfRolloutError):
    """The transferred model did not clear the quality gate; nothing was published."""

    exit_code = 9


class ExportError(TfRolloutError):
    """The SavedModel could not be written or failed its parity check."""

    exit_code = 5


class StorageError(TfRolloutError):
    """Object storage refused, was unreachable, or holds inconsistent data."""

    exit_code = 6


class RolloutError(TfRolloutError):
    """The serving target could not be brought to the requested state."""

    exit_code = 7


class VerifyError(TfRolloutError):
    """Served predictions differ from the local ones beyond tolerance."""

    exit_code = 8


class FileSystemError(TfRolloutError):
    """A disk, permission or copy failure outside the pipeline's own checks (EX_IOERR)."""

    exit_code = 74


class StageOrderError(TfRolloutError):
    """A stage was asked to run before the stages it depends on."""

    exit_code = 2


def describe_os_error(exc: OSError, doing: str = "") -> str:
    """One line for a file-system failure (disk full, read-only, permission, a failed tree copy).

    `shutil.Error` carries a list of (src, dst, reason) triples instead of an errno;
    the first one is what a user needs to see.
    """
    import errno
    import shutil

    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        src, dst, reason = (list(exc.args[0][0]) + ["", "", ""])[:3]
        more = len(exc.args[0]) - 1
        return f"{prefix}copying {src} to {dst} failed: {reason}" + (f" (and {more} more)" if more else "")
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = {errno.ENOSPC: "; free disk space and re-run (nothing partial was published)",
            errno.EDQUOT: "; disk quota exceeded — free space and re-run",
            errno.EROFS: "; the file system is read-only",
            errno.EACCES: "; check the permissions",
            errno.EPERM: "; check the permissions"}.get(exc.errno or 0, "")
    return f"{prefix}{reason}{where}{hint}"
