"""Prometheus metrics in TF Serving's text exposition (util/prometheus_exporter.cc), with
the metrics TF Serving defines for requests (servables/tensorflow/util.cc):

* `:tensorflow:serving:request_count{model_name,status}`: gRPC Predict / Classify /
  Regress, status the canonical code name (RecordModelRequestCount, called by
  prediction_service_impl.cc);
* `:tensorflow:serving:request_latency{model_name,API,entrypoint}`: successful requests
  only; API `Predict` / `Classify` / `Regress` with entrypoint `GRPC`, the REST verb with
  entrypoint `REST`;
* `:tensorflow:serving:runtime_latency{model_name,API,runtime}`: the session run alone
  (runtime `TF1`), successful runs only;
* both histograms in microseconds on `Buckets::Exponential(10, 1.8, 33)`.

Metrics are listed by their TensorFlow name, as the exporter walks its descriptor map;
numbers are printed as absl::StrCat prints doubles (six significant digits)."""

from __future__ import annotations

import bisect
import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _exponential(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """monitoring::Buckets::Exponential: `count` limits, each `growth` × the last
    (computed by the same repeated multiplication); DBL_MAX closes the last bucket."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return tuple(limits)


LATENCY_BUCKETS_US = _exponential(10, 1.8, 33)
# APIs whose session runs TF Serving times (MultiInference's are not)
RUNTIME_APIS = frozenset({"Predict", "Classify", "Regress"})

# The API a request is being served for (Predict / Classify / Regress), so the session
# run it causes is recorded under it; set by the gRPC and REST handlers.
_API: contextvars.ContextVar[str | None] = contextvars.ContextVar("tfs_api", default=None)


@contextmanager
def api_label(api: str) -> Iterator[None]:
    token = _API.set(api)
    try:
        yield
    finally:
        _API.reset(token)


def _number(x: float) -> str:
    """absl::StrCat(double): printf's %.6g."""
    return f"{x:.6g}"


def _labels(pairs: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _escape(value: str) -> str:
    """SanitizeLabelValue: backslash and double quote are escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


class _Histogram:
    """A Sampler cell: counts per bucket (a value equal to a limit goes above it, as
    tensorflow::histogram::Histogram::Add places it) and the sum."""

    def __init__(self, limits: tuple[float, ...]):
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_right(self.limits, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: str) -> list[str]:
        out, cumulative = [], 0
        prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
        for i, n in enumerate(self.counts):
            cumulative += n
            bound = _number(self.limits[i]) if i < len(self.limits) else "+Inf"
            out.append(f'{prefix}le="{bound}"}} {cumulative}')
        out.append(f"{name}_sum{{{labels}}} {_number(self.sum)}")
        out.append(f"{name}_count{{{labels}}} {cumulative}")
        return out


class Metrics:
    """Thread-safe counters and histograms; rendered on scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str, str], _Histogram] = {}
        self._runtime: dict[tuple[str, str, str], _Histogram] = {}
        self._loads: dict[tuple[str, str], int] = defaultdict(int)
        self._batches: dict[int, int] = defaultdict(int)

    def _sample(self, table: dict, key: tuple[str, str, str], us: float) -> None:
        cell = table.get(key)
        if cell is None:
            cell = table[key] = _Histogram(LATENCY_BUCKETS_US)
        cell.add(us)

    def observe_request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One gRPC Predict/Classify/Regress: counted whatever its status, its latency
        recorded only when it succeeded (prediction_service_impl.cc)."""
        with self._lock:
            self._requests[(model, status)] += 1
            if status == "OK":
                self._sample(self._latency, (model, api, entrypoint), int(seconds * 1e6))

    def observe_rest(self, model: str, method: str, seconds: float) -> None:
        """A REST predict/classify/regress that answered 200: its latency, API = the verb."""
        with self._lock:
            self._sample(self._latency, (model, method, "REST"), int(seconds * 1e6))

    def observe_runtime(self, model: str, api: str, seconds: float) -> None:
        with self._lock:
            self._sample(self._runtime, (model, api, "TF1"), int(seconds * 1e6))

    def timed_run(self, run: Callable) -> Callable:
        """Wrap Predictor.run: the time of each successful run, under the API being served
        (RecordRuntimeLatency after session->Run in predict_util.cc / classifier.cc /
        regressor.cc). Runs outside a request (warmup) are not recorded."""
        def timed(servable, *args, **kwargs):
            api = _API.get()
            start = time.perf_counter()
            out = run(servable, *args, **kwargs)
            if api in RUNTIME_APIS:
                self.observe_runtime(servable.name, api, time.perf_counter() - start)
            return out
        return timed

    def observe_load(self, model_path: str, ok: bool) -> None:
        with self._lock:
            self._loads[(model_path, "success" if ok else "fail")] += 1

    def observe_batch(self, rows: int) -> None:
        with self._lock:
            self._batches[rows] += 1

    def render(self) -> str:
        """PrometheusExporter::GeneratePage: by TensorFlow metric name, a `# TYPE` line
        for each (also before any sample), one line per cell."""
        out: list[str] = []
        with self._lock:
            out.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            for (path, status), n in sorted(self._loads.items()):
                out.append(f":tensorflow:cc:saved_model:load_attempt_count{{"
                           f"{_labels({'model_path': path, 'status': status})}}} {n}")
            out.append("# TYPE :tensorflow:serving:batching_session:processed_batch_size counter")
            for rows, n in sorted(self._batches.items()):
                out.append(f":tensorflow:serving:batching_session:processed_batch_size{{"
                           f"{_labels({'batch_size': str(rows)})}}} {n}")
            out.append("# TYPE :tensorflow:serving:request_count counter")
            for (model, status), n in sorted(self._requests.items()):
                out.append(f":tensorflow:serving:request_count{{"
                           f"{_labels({'model_name': model, 'status': status})}}} {n}")
            out.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, entry), cell in sorted(self._latency.items()):
                out += cell.lines(":tensorflow:serving:request_latency",
                                  _labels({"model_name": model, "API": api, "entrypoint": entry}))
            out.append("# TYPE :tensorflow:serving:runtime_latency histogram")
            for (model, api, runtime), cell in sorted(self._runtime.items()):
                out += cell.lines(":tensorflow:serving:runtime_latency",
                                  _labels({"model_name": model, "API": api, "runtime": runtime}))
        return "\n".join(out) + "\n"
