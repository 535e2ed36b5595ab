"""Client load for swarm tests: N clients, each on its own TCP connection (a shared channel would
pin every request to one replica), no retries, every outcome counted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FleetLoad:
    endpoint: str
    model: str
    label: str
    inputs: dict[str, np.ndarray]
    clients: int = 16
    max_seconds: float = 600.0
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

    def _worker(self) -> None:
        from serving.client import PredictionClient

        # a private subchannel pool: one TCP connection per client, spread by SO_REUSEPORT
        with PredictionClient(self.endpoint, deadline=10.0, retries=1, check_signature=False,
                              options=[("grpc.use_local_subchannel_pool", 1)]) as client:
            end = time.monotonic() + self.max_seconds
            while not self._stop.is_set() and time.monotonic() < end:
                try:
                    result = client.predict_detailed(self.model, self.inputs, label=self.label, deadline=10.0)
                    with self._lock:
                        self.ok += 1
                        self.versions[result.version] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    with self._lock:
                        self.errors[type(exc).__name__] += 1
                        self.first_error = self.first_error or str(exc)

    def __enter__(self) -> FleetLoad:
        for i in range(self.clients):
            t = threading.Thread(target=self._worker, name=f"fleet-load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
