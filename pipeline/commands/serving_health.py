"""What `tfrollout status` concludes from what it saw, and the exit code that says it.

A CI health check needs the answer in the exit code, not in prose: 0 only when the
runtime runs and every version its config serves answers AVAILABLE (swarm: at least
one replica of the model's service running). Pure: the facts come from status_report.
"""

from __future__ import annotations

from typing import Any

HEALTHY, NOT_RUNNING, DEGRADED, UNREACHABLE = "healthy", "not running", "degraded", "unreachable"
EXIT_CODES = {HEALTHY: 0, NOT_RUNNING: 10, DEGRADED: 11, UNREACHABLE: 12}


def judge(info: dict[str, Any]) -> tuple[str, str | None]:
    """(health, why) from a status report — why is None when healthy."""
    supervision = info.get("supervisor") or {}
    if not info.get("running"):
        if supervision.get("state") == "gave_up":
            return NOT_RUNNING, (f"the supervisor gave up after {supervision.get('consecutive_failures')} quick "
                                 f"crashes (last exit: {supervision.get('last_exit')}{_inflight(supervision)}); "
                                 "see the server log, then `make deploy` or `tfrollout rollback` restarts it")
        return NOT_RUNNING, "the serving runtime is not running"
    if supervision.get("state") == "backoff":
        return DEGRADED, (f"crash-looping: restarting after {supervision.get('consecutive_failures')} quick "
                          f"crash(es) (last exit: {supervision.get('last_exit')}{_inflight(supervision)})")
    config = info.get("config") or {}
    versions = list(config.get("versions") or [])
    model = info.get("model")
    if "services" in info:  # a replicated target reports per service (see SwarmTarget.describe)
        return _swarm(info, model)
    if info.get("states_error"):
        return DEGRADED, f"version states could not be read: {info['states_error']}"
    if not versions:
        return DEGRADED, f"the runtime runs but serves no version of {model!r}"
    states = info.get("states") or {}
    unavailable = [f"v{v} {states.get(str(v), 'not loaded')}" for v in versions if states.get(str(v)) != "AVAILABLE"]
    if unavailable:
        return DEGRADED, "not AVAILABLE: " + ", ".join(unavailable)
    labels = config.get("labels") or {}
    dangling = [f"{name} -> v{v}" for name, v in labels.items() if v not in versions]
    if dangling:
        return DEGRADED, "labels point at versions not served: " + ", ".join(dangling)
    return HEALTHY, None


def _inflight(supervision: dict[str, Any]) -> str:
    """`; in flight: model=… inputs=…` from the requests recorded at the last crash (never values)."""
    rows = supervision.get("last_inflight") or []
    if not rows:
        return ""
    from pipeline.targets.supervisor import describe_request

    return "; in flight: " + " | ".join(describe_request(row) for row in rows[:3] if isinstance(row, dict))


def _swarm(info: dict[str, Any], model: Any) -> tuple[str, str | None]:
    serving = [svc for svc in (info.get("services") or {}).values()
               if svc.get("model") == model and "replicas" in svc]
    if not serving:
        return DEGRADED, f"no swarm service serves {model!r}"
    running = sum(1 for svc in serving for r in svc["replicas"] if r.get("state") == "running")
    if not running:
        return DEGRADED, f"no replica of {model!r} is running"
    return HEALTHY, None


def shown(value: Any, empty: str = "none") -> str:
    """A value for the human status lines: never Python's `None` — pure."""
    if value is None or value == [] or value == {}:
        return empty
    if isinstance(value, dict):
        return ", ".join(f"{k} -> v{v}" if isinstance(v, int) else f"v{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(f"v{v}" for v in value)
    return str(value)
