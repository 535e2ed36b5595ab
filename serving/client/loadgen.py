"""Concurrent helpers on one shared channel: ordered batch prediction and a bounded load test.

Threads are enough: gRPC releases the GIL while a call is in flight, and one
channel multiplexes every worker's calls over a single HTTP/2 connection.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.client.client import PredictionClient
from serving.client.errors import ClientError

MAX_DURATION_S = 3600.0
MAX_COUNT = 10_000_000


def percentiles_ms(latencies_s: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """`{"p50": ms, ...}` plus mean and max; empty input gives an empty dict."""
    if not latencies_s:
        return {}
    arr = np.asarray(latencies_s, dtype=np.float64) * 1e3
    out = {f"p{p}": round(float(np.percentile(arr, p)), 3) for p in points}
    out["mean"] = round(float(arr.mean()), 3)
    out["max"] = round(float(arr.max()), 3)
    return out


def predict_many(client: PredictionClient, model: str, batches: Sequence[Mapping[str, Any]], *,
                 concurrency: int = 4, **kwargs: Any) -> list[dict[str, np.ndarray]]:
    """Predict each batch concurrently; results come back in input order."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(lambda b: client.predict(model, b, **kwargs), batches))


@dataclass
class LoadReport:
    """What a load test measured; `errors` counts failures by gRPC status name."""

    requests: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_error: str | None = None
    versions: Counter = field(default_factory=Counter)  # which version answered (several replicas/endpoints)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "ok": self.ok, "errors": dict(self.errors),
                "elapsed_s": round(self.elapsed_s, 3),
                "qps": round(self.ok / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
                "latency_ms": percentiles_ms(self.latencies_s), "first_error": self.first_error,
                "versions": {str(v): n for v, n in sorted(self.versions.items(), key=lambda kv: kv[0] or 0)}}


def run_load(client: PredictionClient, model: str, inputs: Mapping[str, Any], *,
             concurrency: int = 4, duration_s: float | None = None, count: int | None = None,
             **kwargs: Any) -> LoadReport:
    """Send `inputs` repeatedly from `concurrency` threads until `count` calls or `duration_s`.

    Always bounded: with neither limit it stops after 10 s; limits are capped at
    MAX_DURATION_S / MAX_COUNT. The signature is checked once up front, not per call.
    """
    if duration_s is None and count is None:
        duration_s = 10.0
    stop_at = time.monotonic() + min(duration_s if duration_s is not None else MAX_DURATION_S,
                                     MAX_DURATION_S)
    budget = min(count, MAX_COUNT) if count is not None else MAX_COUNT
    client.signature(model, kwargs.get("signature", "serving_default"),
                     version=kwargs.get("version"), label=kwargs.get("label"))
    kwargs["check_signature"] = False
    report = LoadReport()
    lock = threading.Lock()
    issued = 0

    def take_ticket() -> bool:
        nonlocal issued
        with lock:
            if issued >= budget or time.monotonic() >= stop_at:
                return False
            issued += 1
            return True

    def worker() -> None:
        while take_ticket():
            start = time.perf_counter()
            try:
                answered = client.predict_detailed(model, inputs, **kwargs).version
            except ClientError as err:
                with lock:
                    report.requests += 1
                    report.errors[err.code or "UNKNOWN"] += 1
                    report.first_error = report.first_error or str(err)
                continue
            took = time.perf_counter() - start
            with lock:
                report.requests += 1
                report.ok += 1
                report.versions[answered] += 1
                report.latencies_s.append(took)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.elapsed_s = time.perf_counter() - started
    return report
