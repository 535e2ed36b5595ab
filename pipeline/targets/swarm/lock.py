"""The swarm's rollout lock record: a config object, whose name is unique in the swarm."""

from __future__ import annotations

import base64
import json
from typing import Any

from pipeline.lock_slot import LockHolder
from pipeline.targets.engine import created_unless_taken
from pipeline.targets.swarm import spec


class LockConfig:
    """The swarm's rollout lock: a config object (names are unique in the swarm) holding the holder."""

    def __init__(self, client: Any, name: str, service_name: str):
        self.client = client
        self.name = name
        self.service_name = service_name

    def _found(self) -> list[Any]:
        return [c for c in self.client.configs.list(filters={"name": self.name}) if c.name == self.name]

    def create(self, holder: LockHolder) -> bool:
        return created_unless_taken(lambda: self.client.configs.create(
            name=self.name, data=json.dumps(holder.to_json()).encode(),
            labels={spec.MANAGED: "lock", spec.SERVICE_LABEL: self.service_name}))

    def read(self) -> LockHolder | None:
        found = self._found()
        if not found:
            return None
        try:
            holder = LockHolder.from_json(json.loads(base64.b64decode(found[0].attrs["Spec"]["Data"])))
        except ValueError:
            holder = None
        return holder or LockHolder.unreadable("unreadable lock config")

    def remove(self) -> bool:
        import docker

        for c in self._found():
            try:
                c.remove()
                return True
            except docker.errors.NotFound:
                return False
        return False
