"""The swarm target: one replicated model service per model on a Docker Swarm (docker SDK).

- `target`: the swarm objects of ours — services, waiting for convergence, status, purge —
  and the rollout lock (`LockConfig`, a swarm config object);
- `edge`: a rollout's spec writing (`SwarmRolloutEdge`), for `rollout.swarm_engine`'s decisions;
- `spec` (agent mode, convergence), `service` (what both modes share), `fetch_spec` (the sidecar
  fetch service): the service specs, pure.
The replica side is `serving.agent`.
"""

from pipeline.targets.swarm.target import SwarmTarget

__all__ = ["SwarmTarget"]
