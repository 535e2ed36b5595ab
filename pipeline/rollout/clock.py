"""Injected time: every rollout step has a deadline, and tests drive the clock by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from pipeline.errors import RolloutError


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when slept on (unit tests: deadlines without waiting)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StepTimeout(RolloutError):
    """A rollout step did not finish before its deadline."""


@dataclass
class Deadline:
    """`seconds` from `clock.monotonic()` at creation; `what` names the step in errors."""

    clock: Clock
    seconds: float
    what: str

    def __post_init__(self) -> None:
        self.end = self.clock.monotonic() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock.monotonic())

    def expired(self) -> bool:
        return self.clock.monotonic() >= self.end

    def check(self, detail: str = "") -> None:
        if self.expired():
            tail = f": {detail}" if detail else ""
            raise StepTimeout(f"{self.what}: not done within {self.seconds:g} s{tail}")
