"""Per-request and whole-server memory bounds (issue 11): a request's declared
tensor bytes are checked against --max_request_bytes before anything is
allocated, and the bytes of all requests being decoded or run are charged to one
in-flight budget (--max_inflight_request_bytes). A request that does not fit is
refused with RESOURCE_EXHAUSTED at once, never queued: waiting for memory is how
a burst of large requests turns into an OOM kill."""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Callable, Iterable

import grpc

from .errors import ServingError

MIB = 1 << 20
DEFAULT_MAX_REQUEST_BYTES = 256 * MIB
DEFAULT_MAX_INFLIGHT_BYTES = 1024 * MIB
# gRPC framing around the tensors (model_spec, map keys, shapes) is small; this
# slack keeps a request whose tensors are exactly at the cap under gRPC's limit
GRPC_FRAMING_SLACK = 64 * 1024


def _malloc_trim() -> Callable[[], None]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return lambda: None
    return lambda: trim(0)


release_freed_memory = _malloc_trim()
"""Return freed heap pages to the OS. gRPC assembles a received message from many small
slices, copies them into a bytearray and then into bytes (3× the message at its peak);
glibc keeps the freed slices mapped, so without this a 512 MB request left ~800 MB of
RSS behind it while the model ran."""


Charge = Callable[[int], None]  # adds bytes to a request's in-flight ticket, or raises RESOURCE_EXHAUSTED


def resource_exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def declared_bytes(dims: Iterable[int], itemsize: int) -> int:
    """shape × dtype size with Python integers (no int64 overflow on hostile shapes)."""
    return math.prod(int(d) for d in dims) * itemsize


def check_declared(alias: str, dims: tuple[int, ...], dtype_name: str, itemsize: int,
                   limit: int | None) -> int:
    """Declared bytes of one input, or RESOURCE_EXHAUSTED when over `limit`."""
    size = declared_bytes(dims, itemsize)
    if limit is not None and size > limit:
        raise resource_exhausted(
            f"tensor parsing error: {alias} (shape {list(dims)} of {dtype_name} declares "
            f"{size} bytes, over the limit of {limit} bytes set by --max_request_bytes)")
    return size


class Ticket:
    """Bytes held in a ByteBudget; released once (explicitly, or when collected)."""

    def __init__(self, budget: ByteBudget | None, nbytes: int):
        self._budget = budget
        self.nbytes = nbytes

    def grow(self, extra: int) -> None:
        """Charge `extra` more bytes to the same request (RESOURCE_EXHAUSTED if they don't fit)."""
        if self._budget is None or extra <= 0:
            return
        self._budget.take(extra)
        self.nbytes += extra

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.give_back(self.nbytes)

    def __del__(self) -> None:  # a request dropped before its handler ran
        self.release()


class ByteBudget:
    """Bytes of all admitted requests; `admit` refuses instead of waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def full(self) -> bool:
        return self._used >= self.limit

    def take(self, nbytes: int) -> None:
        with self._lock:
            if self._used + nbytes > self.limit:
                used = self._used
                raise resource_exhausted(
                    f"Request of {nbytes} bytes refused: {used} of {self.limit} bytes of "
                    f"in-flight requests in use (--max_inflight_request_bytes); retry later")
            self._used += nbytes

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(0, self._used - nbytes)

    def admit(self, nbytes: int) -> Ticket:
        """A ticket holding `nbytes`, or RESOURCE_EXHAUSTED when they don't fit."""
        self.take(nbytes)
        return Ticket(self, nbytes)
