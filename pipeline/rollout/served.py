"""What a serving runtime needs from the store: the versions gc must never delete.

A runtime that reads the store directly (`rollout.model_base_path`, passthrough) loads
its versions from the very folders gc deletes; in every mode `rollback` returns to a
version that must still be committed. So before gc deletes anything it asks the
configured runtime (read-only): its persisted model config (versions and labels) and
GetModelStatus (what is loaded right now). Protected are every loaded, configured or
labelled version, and per model the version `rollback` would return to — the newest
committed version below the stable one (the rule of `plan.previous_version`), also the
newest such version on the host when it differs.

`protected_versions` is pure; `ask_runtime` does the I/O and records every check it
could not make in `RuntimeView.unchecked` (gc then refuses unless forced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import DeployConfig
from pipeline.errors import StorageError, TfRolloutError
from pipeline.storage.base import VersionInfo
from pipeline.targets.base import ServingTarget

STATUS_DEADLINE_S = 5.0
GONE_STATES = {"END"}  # a version in END is unloaded: nothing reads its files any more


@dataclass(frozen=True)
class ConfiguredModel:
    """One model entry of the runtime's persisted `model_config_list`."""

    versions: tuple[int, ...]  # a `specific` policy's versions (empty for latest/all)
    labels: dict[str, int]
    policy: str  # "specific" | "latest" | "all"


@dataclass
class RuntimeView:
    """What one runtime was seen to serve, and which checks could not be made."""

    target: str
    endpoint: str
    running: bool = False
    absent: bool = False  # never set up here: no config, no delivered versions, not running
    configured: dict[str, ConfiguredModel] = field(default_factory=dict)
    live: dict[str, dict[int, str]] = field(default_factory=dict)  # GetModelStatus: model -> version -> state
    on_host: dict[str, list[int]] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "endpoint": self.endpoint, "running": self.running, "absent": self.absent,
                "config": {m: {"versions": list(c.versions), "labels": c.labels, "policy": c.policy}
                           for m, c in sorted(self.configured.items())},
                "loaded": {m: {str(v): s for v, s in sorted(states.items())}
                           for m, states in sorted(self.live.items())},
                "unchecked": list(self.unchecked)}


def parse_config(text: str | None) -> dict[str, ConfiguredModel]:
    """{model: entry} of a persisted model_config_list text (pure; ValueError-like errors propagate)."""
    if not text:
        return {}
    from serving import tfs_config

    out = {}
    for entry in tfs_config.parse_model_server_config(text).model_config_list.config:
        policy = entry.model_version_policy
        kind = "specific" if policy.HasField("specific") else "all" if policy.HasField("all") else "latest"
        out[entry.name] = ConfiguredModel(tuple(sorted(policy.specific.versions)), dict(entry.version_labels), kind)
    return out


def _rollback_target(candidates: Iterable[int], below: int) -> int | None:
    older = [v for v in candidates if v < below]
    return max(older) if older else None


def protected_versions(view: RuntimeView, committed: Mapping[str, Sequence[int]], *,
                       stable_label: str = "stable") -> dict[tuple[str, int], str]:
    """{(model, version): why} for everything the runtime needs from the store (pure)."""
    out: dict[tuple[str, int], str] = {}

    def protect(model: str, version: int, why: str) -> None:
        out.setdefault((model, version), why)

    for model, states in view.live.items():
        for version, state in states.items():
            if state not in GONE_STATES:
                protect(model, version, f"loaded by the runtime ({state})")
    for model, entry in view.configured.items():
        for name, version in sorted(entry.labels.items()):
            protect(model, version, f"label {name!r} on the runtime")
        for version in entry.versions:
            protect(model, version, "in the runtime's model config")
    for model in set(view.configured) | set(view.live):
        found = view.configured.get(model)
        stable = found.labels.get(stable_label) if found is not None else None
        if stable is None:  # unlabelled (a first deploy under way): the newest version it serves
            serving = [v for (name, v) in out if name == model]
            stable = max(serving) if serving else None
        if stable is None:
            continue
        previous = _rollback_target(committed.get(model, ()), stable)
        if previous is not None:
            protect(model, previous, f"previous {stable_label} (what `rollback` returns to from {stable})")
        on_host = set(view.on_host.get(model, ())) & set(committed.get(model, ()))
        previous_here = _rollback_target(on_host, stable)
        if previous_here is not None:
            protect(model, previous_here, f"rollback target on the host (below {stable_label} {stable})")
    return out


def admin_token_for(target: ServingTarget) -> str | None:
    """The ModelService bearer token of `target`, or None (targets without the method: open API)."""
    getter = getattr(target, "admin_token", None)
    return getter() if callable(getter) else None


def ask_runtime(target: ServingTarget, models: Iterable[str], *,
                deadline_s: float = STATUS_DEADLINE_S) -> RuntimeView:
    """Read-only: the runtime's persisted config, its delivered versions and live GetModelStatus.

    Never raises for a runtime problem: whatever could not be checked is one line in
    `unchecked`. A runtime that was never set up here (not running, no config, nothing
    delivered) is `absent`: it serves nothing, which is a checked answer.
    """
    from serving.client import ClientError, ModelNotFoundError, PredictionClient

    view = RuntimeView(target=target.kind, endpoint=target.endpoint)
    text: str | None = None
    try:
        view.running = target.running()
    except Exception as exc:  # noqa: BLE001 - any runtime error is one unchecked line
        view.unchecked.append(f"cannot tell whether the {target.kind} runtime runs: {_one_line(exc)}")
    try:
        text = target.read_config()
        view.configured = parse_config(text)
    except Exception as exc:  # noqa: BLE001
        view.unchecked.append(f"cannot read the {target.kind} runtime's model config: {_one_line(exc)}")
    wanted = sorted(set(models) | set(view.configured))
    for model in wanted:
        try:
            found = target.versions(model)
        except Exception as exc:  # noqa: BLE001
            view.unchecked.append(f"cannot list {model}'s versions on the {target.kind} host: {_one_line(exc)}")
            continue
        if found:
            view.on_host[model] = list(found)
    if view.unchecked:
        return view
    if not view.running:
        if text is None and not view.on_host:
            view.absent = True
        else:
            view.unchecked.append(f"the {target.kind} runtime at {target.endpoint} is not running, so it cannot "
                                  "say which versions it loads (its persisted labels are still protected)")
        return view
    client = PredictionClient(target.endpoint, check_signature=False, admin_token=admin_token_for(target))
    try:
        for model in wanted:
            try:
                rows = client.status(model, deadline=deadline_s)
            except ModelNotFoundError:
                continue
            except ClientError as err:
                view.unchecked.append(f"GetModelStatus of {model} on {target.endpoint} failed: {err}")
                continue
            view.live[model] = {version: str(row["state"]) for version, row in rows.items()}
    finally:
        client.close()
    return view


def gc_protection(config: DeployConfig, versions: Sequence[VersionInfo], *,
                  force: bool) -> tuple[dict[tuple[str, int], str], dict[str, Any]]:
    """(protected versions with reasons, the runtime's report) for `storage gc`.

    The runtime is the one the deploy config rolls out to. When something could not be
    checked, gc is refused (StorageError, one line) unless `force`: then it proceeds,
    still protecting whatever was seen, and the report lists what was not checked.
    """
    from pipeline.targets import open_target

    try:
        target = open_target(config.rollout, config.run.workdir)
    except TfRolloutError as exc:
        view = RuntimeView(target=config.rollout.target, endpoint=f"{config.rollout.host}:"
                           f"{config.rollout.grpc_port}", unchecked=[f"cannot open the runtime: {exc}"])
    else:
        view = ask_runtime(target, sorted({v.model for v in versions}))
    committed: dict[str, list[int]] = {}
    for info in versions:
        if info.committed:
            committed.setdefault(info.model, []).append(info.version)
    protected = protected_versions(view, committed, stable_label=config.rollout.stable_label)
    if view.unchecked and not force:
        raise StorageError(f"gc refused, nothing deleted: {view.unchecked[0]}; gc never deletes a version a "
                           f"runtime may serve — start the runtime or fix the error, or pass --force to delete "
                           f"without this check")
    return protected, view.to_json()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
