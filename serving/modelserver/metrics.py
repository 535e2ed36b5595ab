"""Prometheus metrics in text exposition format (no client library needed):
request counts, request latency histogram, model version states, load attempts."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

from .policy import State

# microseconds, like TF Serving's request_latency
LATENCY_BUCKETS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                      100000, 250000, 500000, 1000000, 2500000, 5000000)


def _labels(pairs: dict[str, str]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())
    return "{" + body + "}" if body else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters and histograms; rendered on scrape."""

    def __init__(self, states: Callable[[], dict[str, dict[int, State]]] | None = None):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], list[int]] = {}
        self._latency_sum: dict[tuple[str, str, str], float] = defaultdict(float)
        self._loads: dict[tuple[str, str], int] = defaultdict(int)
        self._batches: dict[int, int] = defaultdict(int)
        self._states = states

    def observe_request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        us = seconds * 1e6
        key = (model, api, entrypoint)
        with self._lock:
            self._requests[(model, api, entrypoint, status)] += 1
            buckets = self._latency.setdefault(key, [0] * (len(LATENCY_BUCKETS_US) + 1))
            buckets[bisect.bisect_left(LATENCY_BUCKETS_US, us)] += 1
            self._latency_sum[key] += us

    def observe_load(self, model_path: str, ok: bool) -> None:
        with self._lock:
            self._loads[(model_path, "success" if ok else "fail")] += 1

    def observe_batch(self, rows: int) -> None:
        with self._lock:
            self._batches[rows] += 1

    def render(self) -> str:
        out: list[str] = []
        with self._lock:
            out.append("# TYPE :tensorflow:serving:request_count counter")
            for (model, api, ep, status), n in sorted(self._requests.items()):
                out.append(":tensorflow:serving:request_count" + _labels(
                    {"model_name": model, "API": api, "entrypoint": ep, "status": status}) + f" {n}")
            out.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, ep), buckets in sorted(self._latency.items()):
                base = {"model_name": model, "API": api, "entrypoint": ep}
                cumulative = 0
                for bound, n in zip((*LATENCY_BUCKETS_US, "+Inf"), buckets, strict=True):
                    cumulative += n
                    out.append(":tensorflow:serving:request_latency_bucket"
                               + _labels({**base, "le": str(bound)}) + f" {cumulative}")
                out.append(":tensorflow:serving:request_latency_sum" + _labels(base)
                           + f" {self._latency_sum[(model, api, ep)]:.1f}")
                out.append(":tensorflow:serving:request_latency_count" + _labels(base) + f" {cumulative}")
            out.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            for (path, status), n in sorted(self._loads.items()):
                out.append(":tensorflow:cc:saved_model:load_attempt_count"
                           + _labels({"model_path": path, "status": status}) + f" {n}")
            out.append("# TYPE :tensorflow:serving:batching_session:processed_batch_size counter")
            for rows, n in sorted(self._batches.items()):
                out.append(":tensorflow:serving:batching_session:processed_batch_size"
                           + _labels({"batch_size": str(rows)}) + f" {n}")
        out.append("# TYPE :tensorflow:serving:model_version_state gauge")
        for model, versions in sorted((self._states() if self._states else {}).items()):
            for version, state in sorted(versions.items()):
                out.append(":tensorflow:serving:model_version_state" + _labels(
                    {"model_name": model, "version": str(version), "state": state.name}) + " 1")
        return "\n".join(out) + "\n"
