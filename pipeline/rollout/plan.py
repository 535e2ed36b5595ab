"""What the serving host should load at each step of a rollout (pure: no I/O).

A `Served` is one model's entry in the host's `model_config_list`: the loaded
versions (a `specific` policy) and the version labels. The phases of an update
N -> M keep `stable -> N` valid at every instant, because TF Serving refuses a
label on a version that is not loaded and unloads before it relabels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STABLE = "stable"
CANARY = "canary"


@dataclass(frozen=True)
class Served:
    """One model on the host: loaded versions + labels (immutable; compare with ==)."""

    model: str
    versions: tuple[int, ...]
    labels: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted(set(self.versions))))
        bad = {k: v for k, v in self.labels.items() if v not in self.versions}
        if bad:
            raise ValueError(f"labels {bad} name versions not in {self.versions}")

    @property
    def stable(self) -> int | None:
        return self.labels.get(STABLE)

    @property
    def canary(self) -> int | None:
        return self.labels.get(CANARY)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "versions": list(self.versions), "labels": dict(self.labels)}


@dataclass(frozen=True)
class UpdatePlan:
    """The configs of an update from `old` to `new`, in the order they are applied."""

    model: str
    old: int
    new: int
    canary_label: str = CANARY
    stable_label: str = STABLE

    @property
    def load_new(self) -> Served:
        """Load N+1 beside N; stable stays on N."""
        return Served(self.model, (self.old, self.new), {self.stable_label: self.old})

    @property
    def canary(self) -> Served:
        """N+1 is AVAILABLE: now it may carry the canary label."""
        return Served(self.model, (self.old, self.new),
                      {self.stable_label: self.old, self.canary_label: self.new})

    @property
    def switch(self) -> Served:
        """Promote step 1: stable moves to N+1 while N is still loaded (no gap)."""
        return Served(self.model, (self.old, self.new), {self.stable_label: self.new})

    @property
    def promoted(self) -> Served:
        """Promote step 2: N is unloaded (its files stay on the host for rollback)."""
        return Served(self.model, (self.new,), {self.stable_label: self.new})

    @property
    def rolled_back(self) -> Served:
        """Back to stable -> N only; the canary is unloaded."""
        return Served(self.model, (self.old,), {self.stable_label: self.old})


def first_load(model: str, version: int) -> Served:
    """First deploy: load the version unlabelled (a label needs an AVAILABLE version)."""
    return Served(model, (version,), {})


def first_stable(model: str, version: int, stable_label: str = STABLE) -> Served:
    return Served(model, (version,), {stable_label: version})


def safe_config(current: Served | None, stable_label: str = STABLE) -> Served | None:
    """The config to restore after a failure: only what `stable` points at (None: nothing)."""
    if current is None:
        return None
    stable = current.labels.get(stable_label)
    if stable is None:
        return None
    return Served(current.model, (stable,), {stable_label: stable})


def previous_version(on_host: list[int], committed: list[int], current: int) -> int | None:
    """`tfrollout rollback`: the newest committed version below `current` that is on the host."""
    candidates = sorted(set(on_host) & set(committed))
    older = [v for v in candidates if v < current]
    return older[-1] if older else None
