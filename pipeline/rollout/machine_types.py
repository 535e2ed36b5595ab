"""The rollout machine's vocabulary: its phases, the Host it drives, deadlines, the report.

Kept apart from `machine.py` so the engines, the host and the tests can name these
without the state machine itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pipeline.errors import RolloutError
from pipeline.rollout.plan import Served


class Phase(StrEnum):
    """Where a rollout is; recorded in the report's step list."""

    LOCK = "lock"
    START = "start-runtime"
    RESTORE = "restore-stable"
    DELIVER = "deliver"
    LOAD = "load"
    WAIT = "wait-available"
    CANARY = "label-canary"
    VERIFY = "verify"
    LABEL_STABLE = "label-stable"
    PROMOTE = "promote"
    PERSIST = "persist-config"
    DROP_OLD = "unload-old"
    FINISH = "finish-clean-up"
    ROLLBACK = "rollback"
    DONE = "done"


class Host(Protocol):
    """The serving host as the machine sees it (implemented by `pipeline.rollout.host`)."""

    def read(self, model: str) -> Served | None: ...
    def running(self) -> bool: ...
    def start(self, served: Served | None, timeout_s: float) -> None: ...
    def apply(self, served: Served, timeout_s: float) -> None: ...
    def reload(self, served: Served, timeout_s: float) -> None: ...
    def persist(self, served: Served | None, model: str) -> None: ...
    def has_version(self, model: str, version: int) -> bool: ...
    def deliver(self, model: str, version: int) -> None: ...
    def versions_on_host(self, model: str) -> list[int]: ...
    def promotions(self, model: str) -> list[int]: ...
    def states(self, model: str, timeout_s: float) -> dict[int, tuple[str, str]]: ...
    def logs(self, tail: int) -> str: ...
    def lock(self, owner: str) -> None: ...
    def unlock(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class VerifyOutcome:
    ok: bool
    reason: str = ""
    report: dict[str, Any] = field(default_factory=dict)


# (version, label, timeout_s) -> outcome; exactly one of version/label is set.
Verifier = Callable[[int | None, str | None, float], VerifyOutcome]


@dataclass(frozen=True)
class Deadlines:
    """Seconds allowed per step."""

    lock: float = 5.0
    start: float = 90.0
    deliver: float = 300.0
    load: float = 180.0
    verify: float = 120.0
    label: float = 30.0


@dataclass
class RolloutReport:
    """What happened, for the run record and `--json`."""

    model: str
    version: int
    action: str = ""
    previous: int | None = None
    ok: bool = False
    rolled_back: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    served: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    error: str | None = None
    logs: str | None = None
    note: str | None = None  # e.g. why nothing was done
    promoted: bool = False  # the commit point was passed: stable names the verified version
    cleanup_pending: str | None = None  # clean-up after promotion that still failed (next command retries)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class RolloutFailed(RolloutError):
    """A rollout failed (after restoring the safe config); carries the report."""

    def __init__(self, message: str, report: RolloutReport) -> None:
        super().__init__(message)
        self.report = report
        self.details = report.to_json()
