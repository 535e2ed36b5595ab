"""The one rule for "is the version served yet?", kept pure (stdlib only, no gRPC import).

Both waiters use it: `PredictionClient.wait_until_available` (network polling) and the
rollout machine's `wait_available` (polling the host with an injected clock), so a
load error, a still-loading version and a served version are judged the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# {version: (state name, error message)}: GetModelStatus rows, e.g. {2: ("END", "Could not find ...")}
States = Mapping[int, tuple[str, str]]


@dataclass(frozen=True)
class Availability:
    """One look at the version states, judged: serve, give up, or keep waiting."""

    served: int | None = None  # the version that serves now (None: not yet)
    error: str = ""            # the load error when waiting longer cannot help
    detail: str = ""           # what was seen, for a deadline message

    @property
    def done(self) -> bool:
        return self.served is not None or bool(self.error)


def assess(states: States, version: int | None = None) -> Availability:
    """Judge GetModelStatus rows for `version` (None: any version, the highest AVAILABLE wins).

    A version that reached END with an error failed to load (TF Serving does not retry
    it), so callers stop waiting; END without an error is an unload and LOADING/START
    or a missing row means "not yet". With `version=None` the wait fails only when every
    reported version failed to load.
    """
    if version is not None:
        state, error = states.get(version, ("UNKNOWN", ""))
        if state == "AVAILABLE":
            return Availability(served=version)
        if state == "END" and error:
            return Availability(error=error, detail=f"state {state}")
        return Availability(detail=f"state {state}")
    ready = [v for v, (state, _) in states.items() if state == "AVAILABLE"]
    if ready:
        return Availability(served=max(ready))
    failed = {v: error for v, (state, error) in states.items() if state == "END" and error}
    if failed and len(failed) == len(states):
        newest = max(failed)
        return Availability(error=f"version {newest}: {failed[newest]}", detail="every version failed")
    if not states:
        return Availability(detail="no versions reported yet")
    shown = ", ".join(f"{v}: {state}" for v, (state, _) in sorted(states.items()))
    return Availability(detail=f"no version AVAILABLE yet ({shown})")
