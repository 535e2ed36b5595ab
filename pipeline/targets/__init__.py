"""Where models are served: a local model-server process, a Docker container or a swarm service.

`open_target(config, workdir)` picks the backend from `[rollout] target`; the
docker SDK is imported only for the docker target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.config import RolloutConfig
from pipeline.errors import RolloutError
from pipeline.targets.base import ReloadableTarget, ServingTarget


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


def open_reloadable(cfg: RolloutConfig, workdir: Path) -> ReloadableTarget:
    """The configured target as the config-reload machine drives it (RolloutError for a swarm service)."""
    target = open_target(cfg, workdir)
    if not isinstance(target, ReloadableTarget):
        raise RolloutError(f"the {target.kind} target is rolled by its service spec, not by reloading "
                           "a model config")
    return target


__all__ = ["ReloadableTarget", "ServingTarget", "open_reloadable", "open_target"]
