"""What the swarm tests read back from the engine about a model's serving replicas."""

from __future__ import annotations

from pipeline.targets.swarm import SwarmTarget
from tests.rollout.models import MODEL


def healthy_versions(target: SwarmTarget, client) -> list[int]:
    """Versions of the running serving replicas whose container health check says healthy."""
    out = []
    for r in target.replicas(MODEL):
        if r["state"] != "running":
            continue
        container = client.containers.get(r["container"])
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            out.append(r["version"])
    return sorted(out)
