"""Where models are served: a local model-server process, a Docker container or a swarm service.

`open_target(config, workdir)` picks the backend from `[rollout] target`; the
docker SDK is imported only for the docker target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.config import RolloutConfig
from pipeline.targets.base import ServingTarget


def _local(cfg: RolloutConfig, workdir: Path) -> ServingTarget:
    from pipeline.targets.local import LocalTarget

    return LocalTarget(cfg, (cfg.local_dir or workdir / "serving"))


def _docker(cfg: RolloutConfig, workdir: Path) -> ServingTarget:
    from pipeline.targets.docker import DockerTarget

    return DockerTarget(cfg)


def _swarm(cfg: RolloutConfig, workdir: Path) -> ServingTarget:
    from pipeline.targets.swarm import SwarmTarget

    return SwarmTarget(cfg)


TARGETS: dict[str, Callable[[RolloutConfig, Path], ServingTarget]] = {
    "local": _local, "docker": _docker, "swarm": _swarm}


def open_target(cfg: RolloutConfig, workdir: Path) -> ServingTarget:
    """The configured target; `workdir` is the run workdir (local target state lives under it)."""
    return TARGETS[cfg.target](cfg, workdir)


__all__ = ["ServingTarget", "open_target"]
