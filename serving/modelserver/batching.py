"""Dynamic batching: concurrent requests to one signature are queued, merged
along dimension 0 up to max_batch_size (or until batch_timeout_micros passes),
run once, and split back per request. Trades a little latency for throughput."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from functools import partial

import grpc
import numpy as np

from .errors import ServingError, deadline_exceeded, invalid_argument

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchOptions:
    """Values from a BatchingParameters proto (TF Serving's defaults where unset)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2

    @classmethod
    def from_proto(cls, params) -> BatchOptions:
        def get(name: str, default: int) -> int:
            return int(getattr(params, name).value) if params is not None and params.HasField(name) else default

        return cls(
            max_batch_size=max(1, get("max_batch_size", cls.max_batch_size)),
            batch_timeout_micros=max(0, get("batch_timeout_micros", cls.batch_timeout_micros)),
            max_enqueued_batches=max(1, get("max_enqueued_batches", cls.max_enqueued_batches)),
            num_batch_threads=max(1, get("num_batch_threads", cls.num_batch_threads)),
        )


def batch_size_of(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a request: every input must have the same dimension 0."""
    sizes = set()
    for arr in inputs.values():
        if arr.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(arr.shape[0])
    if len(sizes) != 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


class _Task:
    __slots__ = ("inputs", "size", "future", "enqueued")

    def __init__(self, inputs: Mapping[str, np.ndarray], size: int):
        self.inputs = inputs
        self.size = size
        self.future: Future[dict[str, np.ndarray]] = Future()
        self.enqueued = time.monotonic()


class BatchScheduler:
    """One queue and `num_batch_threads` workers for one (servable, signature)."""

    def __init__(self, runner: Runner, options: BatchOptions,
                 on_batch: Callable[[int], None] | None = None):
        self._run = runner
        self._on_batch = on_batch
        self._opt = options
        self._queue: deque[_Task] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._max_tasks = options.max_batch_size * options.max_enqueued_batches
        self._threads = [threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for t in self._threads:
            t.start()

    def submit(self, inputs: Mapping[str, np.ndarray],
               timeout: float | None = None) -> dict[str, np.ndarray]:
        """Run `inputs` as part of a batch; blocks until its slice of the result is ready.

        With `timeout` (seconds), a task still queued when it expires is dropped and
        fails RESOURCE_EXHAUSTED, one already running fails DEADLINE_EXCEEDED (its
        batch finishes for the others), with TF Serving's codes and messages."""
        size = batch_size_of(inputs)
        if size > self._opt.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {self._opt.max_batch_size}")
        task = _Task(inputs, size)
        with self._cond:
            if self._closed:  # version unloading: finish this request without batching
                return self._run(inputs)
            if len(self._queue) >= self._max_tasks:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._cond.notify()
        if timeout is None:
            return task.future.result()
        done, _ = wait([task.future], timeout)
        if not done:
            if task.future.cancel():  # never taken into a batch: it will not run
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   "Run() timeout exceeded while waiting in batching queue")
            raise deadline_exceeded()
        return task.future.result()

    def close(self) -> None:
        """Stop accepting; workers drain what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    def _take_batch(self) -> list[_Task] | None:
        """Block until a batch is due (full, or its oldest task timed out); None when closed."""
        timeout = self._opt.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                # another worker may take tasks while this one waits: re-check each round
                while self._queue and self._queue[0].future.cancelled():
                    self._queue.popleft()  # its caller's timeout expired while it was queued
                if not self._queue:
                    continue
                rows = 0
                for t in self._queue:
                    if t.future.cancelled():
                        continue
                    rows += t.size
                    if rows >= self._opt.max_batch_size:
                        break
                remaining = self._queue[0].enqueued + timeout - time.monotonic()
                if rows >= self._opt.max_batch_size or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._queue and rows + self._queue[0].size <= self._opt.max_batch_size:
                task = self._queue.popleft()
                if not task.future.set_running_or_notify_cancel():
                    continue  # cancelled by its caller's timeout: drop it
                batch.append(task)
                rows += task.size
            return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:  # every task taken had been cancelled
                continue
            try:
                self._process(batch)
            except BaseException as exc:  # a worker must never die with tasks pending
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(exc)

    def _process(self, batch: list[_Task]) -> None:
        if self._on_batch:
            self._on_batch(sum(t.size for t in batch))
        if len(batch) == 1:
            self._settle(batch[0], partial(self._run, batch[0].inputs))
            return
        try:
            merged = {k: np.concatenate([t.inputs[k] for t in batch], axis=0) for k in batch[0].inputs}
        except ValueError:  # inner dimensions differ: run them one by one
            for task in batch:
                self._settle(task, partial(self._run, task.inputs))
            return
        try:
            out = self._run(merged)
        except BaseException as exc:  # the whole batch failed: each request gets the error
            for task in batch:
                task.future.set_exception(exc)
            return
        total = sum(t.size for t in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in out.values()):
            for task in batch:  # outputs not per-row: cannot split, run individually
                self._settle(task, partial(self._run, task.inputs))
            return
        start = 0
        for task in batch:
            task.future.set_result({k: v[start:start + task.size] for k, v in out.items()})
            start += task.size

    @staticmethod
    def _settle(task: _Task, fn: Callable[[], dict[str, np.ndarray]]) -> None:
        try:
            task.future.set_result(fn())
        except BaseException as exc:
            task.future.set_exception(exc)
