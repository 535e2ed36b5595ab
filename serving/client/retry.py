"""When and how long to wait before retrying a call (pure, so it is testable without a server).

Only failures that say "nothing happened" are retried: UNAVAILABLE always, and
DEADLINE_EXCEEDED only for idempotent calls (metadata, status), because a timed
out Predict may still be running on the server.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `attempts` counts the first try."""

    attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    multiplier: float = 2.0

    def should_retry(self, code: str, *, idempotent: bool) -> bool:
        return code == "UNAVAILABLE" or (idempotent and code == "DEADLINE_EXCEEDED")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Sleep before each retry (attempts - 1 values)."""
        rng = rng or random.Random()
        ceiling = self.initial_backoff_s
        for _ in range(max(0, self.attempts - 1)):
            yield rng.uniform(0.5 * ceiling, ceiling)
            ceiling = min(self.max_backoff_s, ceiling * self.multiplier)
