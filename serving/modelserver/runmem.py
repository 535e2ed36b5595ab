"""Bounded compute memory per session run (issue 22, item 2): `--max_run_bytes`.

--max_request_bytes and --max_inflight_request_bytes bound what a request *is*; a
model's activations can be a hundred times that (the demo digits CNN holds ~96 bytes
of intermediate tensors per input byte: a 128 MiB Predict used to grow the server by
13 GB). So each version learns what a run costs and a large request is run in parts
along dimension 0, as TF Serving's large-batch splitting runs a batch, each part
within the budget, their outputs written into one result; or it is refused with
RESOURCE_EXHAUSTED before anything runs when the result alone (or one example) would
not fit.

How the cost is measured: one run of the signature traced with
RunOptions.SOFTWARE_TRACE, whose step stats carry every allocation and deallocation
TensorFlow's allocator made for the step's tensors, timestamped (the tracking
allocator: temporaries, outputs, forwarded buffers counted once). Replaying them in
time order (servable.step_peak_bytes, in `SavedModelServable.run_measured`) gives the
step's peak of live tensor bytes, exactly and independently of other requests running
at the same time. (The alternatives were worse: the process RSS is shared by
concurrent requests and glibc keeps freed pages, so a trial run's RSS delta reads 0
once the heap is warm; summing output sizes counts forwarded buffers several times:
3× the true peak for the demo CNN.) The cost is kept as bytes
per input byte (`Profile`), keyed by signature, fetched outputs and the inputs'
dtypes and ranks, so images of another size reuse it.

When it is measured: during warmup (the first replayed record of each signature),
else on the first request to a signature that is large enough to matter (input over
budget / ASSUMED_RATIO): a probe of its first rows (input ≤ budget / ASSUMED_RATIO)
is run traced, then the request is planned with the measurement. Requests below that
size are run at once with no bookkeeping (the batch-1 path is unchanged).

Assumption, as with TF Serving's batching: a signature whose inputs share dimension
0 and whose outputs have that dimension computes each row independently. A request
whose outputs are not batched along dimension 0 is never split (run whole when its
estimate fits, else refused).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .limits import Charge, resource_exhausted
from .servable import Servable
from .tensors import OwnedInputs

# An unmeasured request whose input is below budget / ASSUMED_RATIO runs at once: even
# at 1024 bytes of tensors per input byte (10× the demo CNN) it stays within the budget.
ASSUMED_RATIO = 1024
MARGIN = 1.25  # headroom over the measured peak (thread scheduling varies it a little)
MAX_PROFILES = 256  # per version


def input_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes of the inputs as TensorFlow holds them (strings: their lengths)."""
    total = 0
    for arr in arrays.values():
        if arr.dtype == object:
            total += sum(len(v) if isinstance(v, bytes | str) else 8 for v in arr.reshape(-1)) + 8 * arr.size
        else:
            total += arr.nbytes
    return total


def rows_of(arrays: Mapping[str, np.ndarray]) -> int | None:
    """The shared dimension 0 of all inputs, or None (a scalar, or sizes that differ)."""
    sizes = {arr.shape[0] if arr.ndim else None for arr in arrays.values()}
    if len(sizes) != 1:
        return None
    return sizes.pop()


@dataclass(frozen=True)
class Profile:
    """What one run of a signature costs, per byte of input."""

    run_per_byte: float  # peak live tensor bytes of the run (outputs included)
    out_per_byte: float  # bytes of the fetched outputs

    @classmethod
    def measure(cls, peak: int, outputs: Mapping[str, np.ndarray], nbytes: int) -> Profile:
        out = sum(v.nbytes for v in outputs.values())
        return cls(max(peak, out) * MARGIN / max(nbytes, 1), out / max(nbytes, 1))


def profile_key(servable: Servable, signature: str, fetches: Sequence[str] | None,
                arrays: Mapping[str, np.ndarray]) -> tuple:
    """Signature, fetched outputs (None: all), and each input's alias, dtype and rank."""
    spec = servable.spec(signature)
    return (spec.key, tuple(fetches) if fetches is not None else tuple(sorted(spec.outputs)),
            tuple(sorted((a, v.dtype.str, v.ndim) for a, v in arrays.items())))


class Profiles:
    """A version's measurements (bounded; the oldest is dropped first)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, Profile] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Profile | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple, profile: Profile) -> None:
        with self._lock:
            self._items[key] = profile
            self._items.move_to_end(key)
            while len(self._items) > MAX_PROFILES:
                self._items.popitem(last=False)


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class RunPlanner:
    """Runs a signature within `max_run_bytes` per session run (None: no bound)."""

    def __init__(self, max_run_bytes: int | None, max_result_bytes: int | None = None):
        self.max_run_bytes = max_run_bytes
        # the joined outputs of a request run in parts (at least one run's worth)
        self.max_result_bytes = max(max_run_bytes or 0, max_result_bytes or 0)
        self.probe_bytes = max(1, max_run_bytes // ASSUMED_RATIO) if max_run_bytes else 0

    @staticmethod
    def profiles(servable: Servable) -> Profiles:
        return servable.extra("run_profiles", Profiles)

    def measure(self, servable: Servable, signature: str, arrays: Mapping[str, np.ndarray],
                fetches: Sequence[str] | None) -> tuple[dict[str, np.ndarray], Profile | None]:
        """Run once traced; the measured profile is stored for the version."""
        nbytes = input_bytes(arrays)
        key = profile_key(servable, signature, fetches, arrays)
        out, peak = servable.run_measured(signature, arrays, fetches)
        if peak is None:
            return out, None
        profile = Profile.measure(peak, out, nbytes)
        self.profiles(servable).put(key, profile)
        return out, profile

    def run(self, servable: Servable, signature: str, arrays: Mapping[str, np.ndarray],
            fetches: Sequence[str] | None = None,
            charge: Charge | None = None) -> dict[str, np.ndarray]:
        """Run whole or in parts; a measured run's cost (its tensors, or one part's plus the
        joined result) is charged with `charge` before it starts, so the in-flight budget
        counts what requests will use while they run, not only what they are."""
        budget = self.max_run_bytes
        if budget is None or not servable.measurable:
            return servable.run(signature, arrays, fetches)
        nbytes = input_bytes(arrays)
        key = profile_key(servable, signature, fetches, arrays)
        profile = self.profiles(servable).get(key)
        if profile is None:
            if nbytes <= self.probe_bytes:
                return servable.run(signature, arrays, fetches)  # small: at once, unmeasured
            profile = self._probe(servable, signature, arrays, fetches, nbytes)
            if profile is None:  # cannot be measured in part: run and measure the whole
                return self.measure(servable, signature, arrays, fetches)[0]
        if profile.run_per_byte * nbytes <= budget:
            if charge is not None:
                charge(int(profile.run_per_byte * nbytes))
            return servable.run(signature, arrays, fetches)
        return self._run_in_parts(servable, signature, arrays, fetches, profile, nbytes, charge)

    def _probe(self, servable: Servable, signature: str, arrays: Mapping[str, np.ndarray],
               fetches: Sequence[str] | None, nbytes: int) -> Profile | None:
        """Measure on the first rows of the request (input ≤ probe_bytes, one row at least)."""
        rows = rows_of(arrays)
        if not rows or rows < 2:
            return None
        take = max(1, min(rows - 1, rows * self.probe_bytes // max(nbytes, 1)))
        _, profile = self.measure(servable, signature, {a: v[:take] for a, v in arrays.items()}, fetches)
        return profile

    def _run_in_parts(self, servable: Servable, signature: str, arrays: Mapping[str, np.ndarray],
                      fetches: Sequence[str] | None, profile: Profile, nbytes: int,
                      charge: Charge | None) -> dict[str, np.ndarray]:
        budget = self.max_run_bytes
        assert budget is not None
        need = profile.run_per_byte * nbytes
        rows = rows_of(arrays)
        if not rows or rows < 2:
            raise resource_exhausted(
                f"Running this request needs about {_mib(need)} of tensors, over the {_mib(budget)} "
                "one run may use (--max_run_bytes), and its inputs do not share a batch dimension "
                "to run it in parts")
        result_bytes = profile.out_per_byte * nbytes
        if result_bytes > self.max_result_bytes:
            raise resource_exhausted(
                f"The outputs of this request would take about {_mib(result_bytes)}, over the "
                f"{_mib(self.max_result_bytes)} a result may use (max of --max_run_bytes and "
                "--max_request_bytes); send fewer rows")
        per_row = need / rows
        if per_row > budget:
            raise resource_exhausted(
                f"One example of this request needs about {_mib(per_row)} of tensors to run, over the "
                f"{_mib(budget)} one run may use (--max_run_bytes)")
        step = plan_parts(profile, nbytes, rows, budget)
        if charge is not None:  # one part at a time, and the result they are joined into
            charge(int(min(need, profile.run_per_byte * nbytes * step / rows) + result_bytes))
        local = dict(arrays)
        if isinstance(arrays, OwnedInputs):
            arrays.clear()  # the slices below are all that keeps the request's arrays alive
        result: dict[str, np.ndarray] = {}
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            part = servable.run(signature, {a: v[start:stop] for a, v in local.items()}, fetches)
            for alias, value in part.items():
                if value.ndim == 0 or value.shape[0] != stop - start:
                    raise resource_exhausted(
                        f"Running this request needs about {_mib(need)} of tensors, over the "
                        f"{_mib(budget)} one run may use (--max_run_bytes), and output {alias} is not "
                        "batched along dimension 0, so it cannot be run in parts")
                if alias not in result:
                    result[alias] = np.empty((rows, *value.shape[1:]), value.dtype)
                result[alias][start:stop] = value
            del part
        return result


def plan_parts(profile: Profile, nbytes: int, rows: int, budget: int) -> int:
    """Rows per part for a request of `nbytes` and `rows` (what `_run_in_parts` uses)."""
    return max(1, int(budget // (profile.run_per_byte * nbytes / rows)))

