"""What every agent mode shares: the one error a replica stops on, and reading a small optional file."""

from __future__ import annotations


class AgentError(Exception):
    """A replica that cannot get (or prove) its model: the container exits non-zero."""


def read_optional(path: str | None) -> str | None:
    """The stripped text of a secret/config file the spec may name (None: not named, or empty)."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() or None
