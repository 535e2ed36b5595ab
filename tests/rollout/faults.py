"""Faults injected into a real target after the commit point (promotion), for the local and Docker
rollout tests: every write to the serving host's storage fails, as when the engine or the disk
goes away right after `stable` moved."""

from __future__ import annotations

from typing import Any


def writes_fail_after_promote(session: Any) -> list[int]:
    """Make `session.target.write_config` raise during every clean-up step that follows promotion
    (persisting the config, unloading the old version); returns a list counting the failed writes."""
    machine, target = session.machine, session.target
    real_clean_up, real_write = machine._clean_up, target.write_config
    failed: list[int] = []

    def engine_gone(*_: object, **__: object) -> None:
        failed.append(1)
        raise ConnectionError("('Connection aborted.', RemoteDisconnected('closed without response'))")

    def clean_up_without_storage(*args: Any, **kwargs: Any) -> Any:
        target.write_config = engine_gone
        try:
            return real_clean_up(*args, **kwargs)
        finally:
            target.write_config = real_write

    machine._clean_up = clean_up_without_storage
    return failed
