"""Which versions were verified as `stable`, in order: kept in the runtime's own config file (pure).

`tfrollout rollback` must return to the last version that was verified and promoted,
never to one whose canary failed — "the newest committed version below stable" can be
exactly that. The history lives in the host's model config as comment lines
(`# tfrollout promoted digits 1 2 5`): TF Serving and our server ignore comments, and
the history is written in the same file write as the config it describes, so the two
never disagree (a promotion whose config write is owed brings its history entry with it).

Every write of a config advances the history by the stable version it names: a new
version is appended (a promotion); one already in the history truncates it there (a
rollback pops what came after); the same one changes nothing.
"""

from __future__ import annotations

import re

PREFIX = "# tfrollout promoted "
_LINE = re.compile(r"^# tfrollout promoted (?P<model>\S+)(?P<versions>(?: \d+)*)\s*$")
MAX_ENTRIES = 64  # a bounded file: the oldest promotions fall off


def read_histories(text: str | None) -> dict[str, list[int]]:
    """Every model's promotion history in a config file's text."""
    out: dict[str, list[int]] = {}
    for line in (text or "").splitlines():
        match = _LINE.match(line.strip())
        if match:
            out[match["model"]] = [int(v) for v in match["versions"].split()]
    return out


def advanced(history: list[int], stable: int | None) -> list[int]:
    """The history after a config naming `stable` is written."""
    if stable is None or (history and history[-1] == stable):
        return list(history)
    if stable in history:
        return history[:len(history) - history[::-1].index(stable)]
    return [*history, stable][-MAX_ENTRIES:]


def with_histories(config_text: str, histories: dict[str, list[int]]) -> str:
    """The config text (without history lines) followed by one history line per model."""
    body = "\n".join(line for line in config_text.splitlines() if not _LINE.match(line.strip())).rstrip()
    lines = [f"{PREFIX}{model} {' '.join(str(v) for v in versions)}".rstrip()
             for model, versions in sorted(histories.items()) if versions]
    return "\n".join([body, *lines]) + "\n" if lines else body + "\n"


def rollback_target(history: list[int], available: set[int], current: int) -> int | None:
    """The last verified stable before `current` that is still available (on the host and
    committed), or None. Only versions that were promoted are candidates."""
    earlier = history[:len(history) - history[::-1].index(current)] if current in history else list(history)
    for version in reversed(earlier):
        if version != current and version in available:
            return version
    return None
