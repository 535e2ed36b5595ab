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


class StageOrderError(TfRolloutError):
    """A stage was asked to run before the stages it depends on."""

    exit_code = 2
