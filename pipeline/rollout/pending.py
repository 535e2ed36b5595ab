"""Clean-up owed after a promotion: kept on this machine so the next command finishes it.

Promotion is the commit point: once `stable` names the verified version on the runtime,
nothing may move it back. What follows (persisting the config, unloading the old
version) can fail for transient reasons — a dropped ssh or TCP connection, a busy
engine. Those steps are retried; if they still fail, the config they were bringing the
host to is written here, and the next rollout, rollback or status applies it first.
Kept locally (the run workdir) because the host's own storage may be what failed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.rollout.plan import Served


@dataclass(frozen=True)
class PendingCleanup:
    """One model's owed config, or nothing."""

    folder: Path

    def _path(self, model: str) -> Path:
        return self.folder / f"cleanup-pending-{model}.json"

    def save(self, served: Served, reason: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(served.model)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"served": served.to_json(), "reason": reason}))
        os.replace(partial, path)

    def load(self, model: str) -> tuple[Served, str] | None:
        try:
            record = json.loads(self._path(model).read_text())
            served = record["served"]
            return Served(served["model"], tuple(served["versions"]), dict(served["labels"])), str(record["reason"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear(self, model: str) -> None:
        self._path(model).unlink(missing_ok=True)
