"""A bounded background load: N threads call Predict on a label until stopped; counts every outcome."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BackgroundLoad:
    endpoint: str
    model: str
    label: str
    inputs: dict[str, np.ndarray]
    concurrency: int = 20
    max_seconds: float = 300.0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    first_error: str | None = None
    versions: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def requests(self) -> int:
        return self.ok + sum(self.errors.values())

    def _worker(self, client) -> None:
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            try:
                result = client.predict_detailed(self.model, self.inputs, label=self.label,
                                                 check_signature=False, deadline=10.0)
                with self._lock:
                    self.ok += 1
                    self.versions[result.version] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                    self.first_error = self.first_error or str(exc)

    def _clients(self) -> list:
        """One shared client (one channel); FleetLoad overrides this with one per worker."""
        from serving.client import PredictionClient

        return [PredictionClient(self.endpoint, deadline=10.0, retries=1)]  # no retries: count every failure

    def __enter__(self) -> BackgroundLoad:
        self._open = self._clients()
        for i in range(self.concurrency):
            client = self._open[i % len(self._open)]
            t = threading.Thread(target=self._worker, args=(client,), name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        for client in self._open:
            client.close()
