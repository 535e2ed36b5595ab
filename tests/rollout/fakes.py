"""An in-memory serving host that behaves like TF Serving's reload semantics, with fault switches."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import RolloutError
from pipeline.rollout.clock import FakeClock
from pipeline.rollout.plan import Served


@dataclass
class FakeHost:
    clock: FakeClock = field(default_factory=FakeClock)
    config: Served | None = None            # persisted file
    live: Served | None = None              # what the runtime has applied
    is_running: bool = False
    delivered: set[int] = field(default_factory=set)
    committed: set[int] = field(default_factory=lambda: {1, 2, 3})
    load_seconds: float = 1.0
    bad_load: set[int] = field(default_factory=set)       # versions whose load fails (END + error)
    never_loads: set[int] = field(default_factory=set)    # stay LOADING forever
    die_on_apply: int | None = None                       # the runtime dies on the n-th apply
    fail_apply: int | None = None                         # the n-th apply (or reload) is refused
    fail_applies: set[int] = field(default_factory=set)   # these applies/reloads are refused
    fail_persist: set[int] | None = None                  # these persist calls fail
    persists: int = 0
    fail_deliver: bool = False
    status_errors: int = 0                                # the next n status reads fail (runtime busy)
    die_on_status: int | None = None                      # the runtime dies on the n-th status read
    status_reads: int = 0
    locked_by: str | None = None
    applies: list[Served] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    promoted: list[int] = field(default_factory=list)  # the promotion history kept with the config
    loaded_at: dict[int, float] = field(default_factory=dict)
    stable_seen: list[int | None] = field(default_factory=list)

    def read(self, model: str) -> Served | None:
        return self.config

    def running(self) -> bool:
        return self.is_running

    def start(self, served: Served | None, timeout_s: float) -> None:
        self.history.append("start")
        if served is not None:
            self._write(served)
        self.is_running, self.live = True, self.config
        for v in (self.live.versions if self.live else ()):
            self.loaded_at.setdefault(v, self.clock.monotonic())

    def apply(self, served: Served, timeout_s: float) -> None:
        self.reload(served, timeout_s)
        self._write(served)

    def _write(self, served: Served | None) -> None:
        """The file and its promotion history, as ServingHost writes them (pipeline/rollout/history.py)."""
        from pipeline.rollout.history import advanced

        self.config = served
        if served is not None:
            self.promoted = advanced(self.promoted, served.stable)

    def promotions(self, model: str) -> list[int]:
        return list(self.promoted)

    def reload(self, served: Served, timeout_s: float) -> None:
        """The runtime takes `served`; the file is not written (persist does that)."""
        if not self.is_running:
            raise RolloutError("runtime not running")
        n = len(self.applies) + 1
        self.applies.append(served)
        if self.die_on_apply == n:
            self.is_running, self.live = False, None
            raise RolloutError("connection reset: runtime died")
        if self.fail_apply == n or n in self.fail_applies:
            raise RolloutError("reload refused")
        for v in served.versions:
            if v not in self.delivered:
                raise RolloutError(f"version {v} not on the host")
            self.loaded_at.setdefault(v, self.clock.monotonic())
        self.live = served
        self.stable_seen.append(served.stable)
        self.history.append(f"apply {served.versions} {served.labels}")

    def persist(self, served: Served | None, model: str) -> None:
        self.persists += 1
        if self.fail_persist is not None and self.persists in self.fail_persist:
            raise RolloutError("write model config: connection reset by peer")
        self._write(served)
        self.history.append(f"persist {served.to_json() if served else None}")

    def has_version(self, model: str, version: int) -> bool:
        return version in self.delivered

    def deliver(self, model: str, version: int) -> None:
        if self.fail_deliver:
            raise RolloutError("store unreachable during delivery")
        self.delivered.add(version)
        self.history.append(f"deliver {version}")

    def versions_on_host(self, model: str) -> list[int]:
        return sorted(self.delivered)

    def states(self, model: str, timeout_s: float) -> dict[int, tuple[str, str]]:
        self.status_reads += 1
        if self.die_on_status == self.status_reads:
            self.is_running, self.live = False, None
        if not self.is_running:
            raise RolloutError("unavailable")
        if self.status_errors > 0:
            self.status_errors -= 1
            raise RolloutError("status of digits failed: DEADLINE_EXCEEDED: no answer within 0.2 s")
        out = {}
        for v in (self.live.versions if self.live else ()):
            if v in self.bad_load:
                out[v] = ("END", "Could not find SavedModel")
            elif v in self.never_loads:
                out[v] = ("LOADING", "")
            else:
                ready = self.clock.monotonic() - self.loaded_at.get(v, 0.0) >= self.load_seconds
                out[v] = ("AVAILABLE", "") if ready else ("LOADING", "")
        return out

    def logs(self, tail: int) -> str:
        return "fake runtime log line\nlast line"

    def lock(self, owner: str) -> None:
        if self.locked_by is not None:
            raise RolloutError(f"another rollout is in progress (lock held by {self.locked_by})")
        self.locked_by = owner

    def unlock(self) -> None:
        self.locked_by = None

    def stop(self) -> None:
        self.is_running, self.live = False, None
        self.history.append("stop")
