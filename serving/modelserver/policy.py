"""Pure version decisions: which versions a policy wants, what to load and unload,
and which version a label names. No I/O, no TensorFlow: unit-testable directly."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import ServingError, failed_precondition, invalid_argument


class State(enum.IntEnum):
    """Version states; values are ModelVersionStatus.State numbers."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionPolicy:
    """`latest {num_versions}`, `all {}` or `specific {versions}`."""

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_proto(cls, policy) -> VersionPolicy:
        """From a FileSystemStoragePathSourceConfig.ServableVersionPolicy (default latest 1)."""
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            return cls(kind="all")
        if which == "specific":
            return cls(kind="specific", versions=frozenset(int(v) for v in policy.specific.versions))
        if which == "latest":
            return cls(kind="latest", num_versions=max(1, policy.latest.num_versions or 1))
        return cls()


def select_versions(policy: VersionPolicy, on_disk: Iterable[int]) -> set[int]:
    """Versions the policy aspires to, among those present on disk."""
    present = sorted(set(on_disk))
    if policy.kind == "all":
        return set(present)
    if policy.kind == "specific":
        return {v for v in present if v in policy.versions}
    return set(present[-policy.num_versions:]) if present else set()


_INT64_MAX = 2**63 - 1
_ASCII_SPACE = " \t\n\v\f\r"


def version_number(name: str) -> int | None:
    """A directory name as a version, as TF Serving's safe_strto64 reads it: ASCII
    digits (leading zeros allowed: `00000123` is 123) within int64, surrounding
    whitespace and a `+` accepted; negative numbers and anything else are not versions."""
    text = name.strip(_ASCII_SPACE)
    if text.startswith("+"):
        text = text[1:]
    if not text or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= _INT64_MAX else None


def index_version_dirs(names: Iterable[str]) -> tuple[dict[int, str], list[tuple[int, str, str]]]:
    """version → directory name, and (version, kept, ignored) for duplicates.

    Names are taken in sorted order and a later name of the same version wins, as
    TF Serving's IndexChildrenByVersion does (`123` wins over `00000123`)."""
    out: dict[int, str] = {}
    duplicates: list[tuple[int, str, str]] = []
    for name in sorted(names):
        v = version_number(name)
        if v is None:
            continue
        if v in out:
            duplicates.append((v, name, out[v]))
        out[v] = name
    return out, duplicates


def parse_version_dirs(names: Iterable[str]) -> set[int]:
    """Version numbers among directory names (TF Serving ignores everything else)."""
    return set(index_version_dirs(names)[0])


def plan_loads(desired: set[int], states: Mapping[int, State], blocked: set[int]) -> tuple[int, ...]:
    """Desired versions not yet loading/available; `blocked` are failed loads not to retry now."""
    active = {State.LOADING, State.AVAILABLE}
    return tuple(sorted(v for v in desired if states.get(v) not in active and v not in blocked))


def plan_unloads(desired: set[int], states: Mapping[int, State]) -> tuple[int, ...]:
    """Loaded versions no longer desired.

    Availability-preserving: while some version is desired but none of the desired
    versions is AVAILABLE yet (still loading, or failed), keep serving the old ones.
    An empty desired set (model removed or no versions on disk) unloads everything.
    """
    loaded = [v for v, s in states.items() if s == State.AVAILABLE and v not in desired]
    if not loaded:
        return ()
    if desired and not any(states.get(v) == State.AVAILABLE for v in desired):
        return ()
    return tuple(sorted(loaded))


def resolve_label(model_name: str, labels: Mapping[str, int], label: str) -> int:
    """Version a label names, or TF Serving's INVALID_ARGUMENT for unknown labels."""
    try:
        return labels[label]
    except KeyError:
        raise invalid_argument(f"Unrecognized servable version label: {label}") from None


def check_labels(model_name: str, labels: Mapping[str, int], available: set[int],
                 allow_unavailable: bool) -> ServingError | None:
    """A label may only name an AVAILABLE version unless the flag allows otherwise."""
    if allow_unavailable:
        return None
    for label, version in sorted(labels.items()):
        if version not in available:
            return failed_precondition(
                f"Request to assign label to version {version} of model {model_name}, "
                f"which is not currently available for inference (label: {label})")
    return None


def pick_latest(states: Mapping[int, State]) -> int | None:
    """Highest AVAILABLE version (what a request without version resolves to)."""
    available = [v for v, s in states.items() if s == State.AVAILABLE]
    return max(available) if available else None
