"""Client load for swarm tests: N clients, each on its own TCP connection (a shared channel would
pin every request to one replica), no retries, every outcome counted."""

from __future__ import annotations

from dataclasses import dataclass

from tests.rollout.hammer import BackgroundLoad


@dataclass
class FleetLoad(BackgroundLoad):
    """BackgroundLoad with `clients` workers, each with its own client and connection."""

    clients: int = 16
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.concurrency = self.clients

    def _clients(self) -> list:
        from serving.client import PredictionClient

        # a private subchannel pool: one TCP connection per client, spread by SO_REUSEPORT
        return [PredictionClient(self.endpoint, deadline=10.0, retries=1, check_signature=False,
                                 options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(self.clients)]
