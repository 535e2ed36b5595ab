"""`tfrollout rollout | rollback | status | serve stop | serve unlock`: drive the serving target.

None of these import TensorFlow: the host speaks ModelService through the light
`serving.client`, and the golden set is plain numpy — so `status` answers in a fraction
of a second, even on a CI runner.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.commands.common import ConfigOpt, DebugOpt, JsonOpt, ModelOpt, SetOpt, emit, load_cfg
from pipeline.config import DeployConfig
from pipeline.errors import RolloutError, StorageError
from pipeline.progress import Reporter
from pipeline.rollout.host import ServingHost
from pipeline.rollout.machine import RolloutReport
from pipeline.rollout.session import committed_version, committed_versions, golden_for, open_session
from pipeline.run import last_export
from pipeline.storage import Store
from pipeline.targets import open_target


def model_or_last(cfg: DeployConfig, model: str | None) -> str:
    """The model a command acts on: the flag, else the last run's export, else `export.model_name`."""
    if model:
        return model
    export = last_export(cfg)
    return export.model_name if export is not None else cfg.export.model_name


def rollout_version(cfg: DeployConfig, model: str, version: int | None, *, verify: bool,
                    note: Callable[[str], None] = lambda line: None) -> RolloutReport:
    """Roll a committed version (default: the newest) out: canary -> verify -> promote, or roll back.

    A comparison with serving its gate deferred runs first (stages.rollout.check_before_rollout)."""
    from pipeline.stages.rollout import check_before_rollout

    store, wanted = committed_version(cfg, model, version)
    check_before_rollout(cfg, store, model, wanted, note)
    with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as scratch:
        golden = (golden_for(store, model, wanted, Path(scratch), last_export(cfg))
                  if verify and cfg.rollout.verify_canary else None)
        session = open_session(cfg, model, store=store, golden=golden)
        try:
            return session.machine.rollout(model, wanted)
        finally:
            session.close()


def rollback_model(cfg: DeployConfig, model: str, *, verify: bool = True) -> dict[str, Any]:
    """Drop an unfinished canary, else go back to the last version verified as stable before the
    current one (the host's promotion history), verified again with its own golden set.

    An unreachable store does not stop a rollback without verification (`verify=False`): the
    versions already on the host are used. Verifying needs the version's golden set from the
    store: without it the rollback is refused (fail closed), saying how to skip the check.
    """
    note = None
    store: Store | None = None
    committed: list[int] | None = None
    try:
        store, committed = committed_versions(cfg, model)
    except StorageError as exc:
        note = f"store unreachable ({exc}); using versions on the host"
    session = open_session(cfg, model, store=store)
    try:
        available = committed if committed is not None else session.target.versions(model)
        with tempfile.TemporaryDirectory(prefix="tfrollout-rollback-") as scratch:
            verifier = rollback_verifier(cfg, session, store, model, available, Path(scratch)) if verify else None
            report = session.machine.rollback(model, available, verifier=verifier)
    finally:
        session.close()
    notes = [text for text in (report.note, note) if text]
    return {**report.to_json(), "note": "; ".join(notes) or None}


def rollback_verifier(cfg: DeployConfig, session: Any, store: Store | None, model: str, available: list[int],
                      scratch: Path) -> Any:
    """The check for the version a rollback would restore: its golden set, served under the
    canary label (no quality gate: the point is to leave the current stable). None when
    there is nothing to restore (the machine then says so)."""
    from pipeline.rollout.history import rollback_target
    from pipeline.rollout.session import golden_verifier

    current = session.host.read(model)
    if current is None or current.stable is None or current.canary is not None:
        return None  # nothing served, or an unfinished canary to drop: nothing to verify
    target = rollback_target(session.host.promotions(model), set(session.host.versions_on_host(model)) & set(available),
                             current.stable)
    if target is None:
        return None
    if store is None:
        raise RolloutError(f"rollback to {model} v{target} verifies it with its golden set, which comes from the "
                           "store, and the store is unreachable; `tfrollout rollback --no-verify` restores it "
                           "unverified")
    golden = golden_for(store, model, target, scratch, last_export(cfg))
    plain = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"min_accuracy": None,
                                                                        "max_drop_vs_serving": None})})
    return golden_verifier(plain, session.target.endpoint, model, golden)


def finish_owed_clean_up(cfg: DeployConfig, model: str) -> str | None:
    """Clean-up an earlier promotion still owes, finished now (see rollout.pending); None if none."""
    from pipeline.rollout.pending import PendingCleanup

    if cfg.rollout.target == "swarm":  # nothing kept locally: the engine shows what is left
        from pipeline.targets.swarm import SwarmTarget

        try:
            return SwarmTarget(cfg.rollout).finish_clean_up(model)
        except Exception as exc:  # noqa: BLE001 - status still reports what it can
            return f"clean-up pending, not finished now: {exc}"
    if PendingCleanup(cfg.run.workdir).load(model) is None:
        return None
    try:
        session = open_session(cfg, model, store=None)
    except Exception as exc:  # noqa: BLE001 - status still reports what it can
        return f"clean-up pending, not finished now: {exc}"
    try:
        return session.machine.finish_clean_up(model)
    finally:
        session.close()


def status_report(cfg: DeployConfig, model: str) -> dict[str, Any]:
    """What the host's config serves, the runtime's health and the live version states."""
    target = open_target(cfg.rollout, cfg.run.workdir)
    host = ServingHost(target, None)
    try:
        served = host.read(model)
        info: dict[str, Any] = {"ok": True, "model": model, **target.describe(),
                                "config": served.to_json() if served else None,
                                "on_host": target.versions(model), "states": None,
                                "promoted": host.promotions(model) if target.kind != "swarm" else None}
        # swarm: the shared port answers for a random replica; per-replica rows come from describe()
        if info["running"] and target.kind != "swarm":
            try:
                info["states"] = {str(v): s for v, (s, _) in host.states(model, 5.0).items()}
            except Exception as exc:  # noqa: BLE001 - a sick runtime is a status, not a crash
                info["states_error"] = str(exc)
                info["ok"] = False
        wanted = set(served.versions if served else ()) | set(info["on_host"] or ())
        info["evaluation"], info["evaluation_error"] = version_evaluations(cfg, model, wanted)
        return info
    finally:
        host.close()


def version_evaluations(cfg: DeployConfig, model: str, versions: set[int]) -> tuple[dict[str, Any], str | None]:
    """Each version's evaluation as its committed manifest in the store records it (the host
    may be a remote engine whose files we cannot read). An unreachable store leaves status
    usable: ({}, why)."""
    from pipeline.commands.store import evaluation_text
    from pipeline.storage import open_store

    if not versions:
        return {}, None
    try:
        listed = open_store(cfg.storage).list_versions(model)
    except StorageError as exc:
        return {}, f"store {cfg.storage.uri}: {exc}"
    out: dict[str, Any] = {}
    for info in listed:
        if info.version in versions:
            export = info.to_json().get("export") or {}
            out[str(info.version)] = {"summary": evaluation_text(export) or "no evaluation recorded",
                                      "metrics": export.get("metrics"), "quality_gate": export.get("quality_gate")}
    return out, None


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(report)
        return
    if report.get("action") == "none":
        typer.echo(report.get("note") or "nothing to do")
        return
    served = report.get("served") or {}
    typer.echo(f"{report.get('action')}: {report.get('model')} stable -> {served.get('labels', {})} "
               f"loaded {served.get('versions')} ({report.get('timings_s')})")
    if report.get("note"):
        typer.echo(f"note: {report['note']}")
    if report.get("cleanup_pending"):
        typer.echo(f"warning: promoted, clean-up pending: {report['cleanup_pending']} (the next rollout, "
                   "rollback or status finishes it)", err=True)


def rollout(
    config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
    version: Annotated[int | None, typer.Option("--version", min=1,
                                                help="Committed version (default: the newest).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Promote without verifying the canary.")] = False,
    as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Roll a committed version out: canary -> verify -> promote, or roll back on failure."""
    cfg = load_cfg(config, set_)
    note = Reporter(quiet=as_json).note
    if cfg.rollout.target == "swarm":  # a service spec rolled by swarm, not the config-reload machine
        from pipeline.rollout.swarm_run import rollout_swarm
        from pipeline.stages.rollout import check_before_rollout

        name = model_or_last(cfg, model)
        store, wanted = committed_version(cfg, name, version)
        check_before_rollout(cfg, store, name, wanted, note)
        swarm = rollout_swarm(cfg, name, wanted, verify=not no_verify, last=last_export(cfg))
        _print_swarm_report(swarm.to_json(), as_json)
        return
    report = rollout_version(cfg, model_or_last(cfg, model), version, verify=not no_verify, note=note)
    _print_report(report.to_json(), as_json)


def _print_swarm_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(report)
        return
    if report.get("action") == "none":
        typer.echo(report.get("note") or "nothing to do")
        return
    replicas = report.get("replicas") or []
    typer.echo(f"{report.get('action')}: {report.get('model')} v{report.get('version')} on {len(replicas)} "
               f"replica(s) of {report.get('service')} in {report.get('duration_s', 0.0):.1f} s")
    if report.get("cleanup_pending"):
        typer.echo(f"warning: promoted, clean-up pending: {report['cleanup_pending']}", err=True)


def rollback(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
             no_verify: Annotated[bool, typer.Option("--no-verify", help="Restore without checking the version's "
                                                     "golden set (e.g. the store is unreachable).")] = False,
             as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Restore service: drop an unfinished canary, else go back to the previous committed version on the host."""
    cfg = load_cfg(config, set_)
    if cfg.rollout.target == "swarm":  # the service rolls back to the previous committed version, canary first
        from pipeline.rollout.swarm_run import rollback_swarm

        _print_swarm_report(rollback_swarm(cfg, model_or_last(cfg, model)), as_json)
        return
    _print_report(rollback_model(cfg, model_or_last(cfg, model), verify=not no_verify), as_json)


def status(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
           as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """What the serving host loads, its labels, the runtime's health and live version states.

    Exit code: 0 healthy, 10 not running, 11 degraded (running, but a served version is
    not AVAILABLE or nothing is served), 12 the target could not be reached."""
    from pipeline.commands import serving_health as health
    from pipeline.commands.common import fail

    cfg = load_cfg(config, set_)
    name = model_or_last(cfg, model)
    cleanup = finish_owed_clean_up(cfg, name)
    try:
        info = status_report(cfg, name)
    except RolloutError as exc:
        raise fail(f"{health.UNREACHABLE}: {exc}", health.EXIT_CODES[health.UNREACHABLE], as_json=as_json,
                   details={"health": health.UNREACHABLE}) from None
    verdict, why = health.judge(info)
    if cleanup is not None and verdict == health.HEALTHY and not cleanup.startswith("finished"):
        verdict, why = health.DEGRADED, cleanup
    info.update(health=verdict, health_reason=why, ok=verdict == health.HEALTHY, cleanup=cleanup)
    if as_json:
        emit(info)
    else:
        _print_status(info)
    if verdict != health.HEALTHY:
        typer.echo(f"status {verdict} (exit {health.EXIT_CODES[verdict]}): {why}", err=True)
        raise typer.Exit(health.EXIT_CODES[verdict])


def _print_status(info: dict[str, Any]) -> None:
    from pipeline.commands.serving_health import shown

    typer.echo(f"target {info['target']} at {info['endpoint']}: "
               f"{info['health'] if info['health'] == 'not running' else 'running, ' + info['health']}")
    for name, svc in (info.get("services") or {}).items():  # swarm target
        typer.echo(f"service {name}: v{svc['version']}, update {svc['update'] or 'none'}")
        for r in svc.get("replicas", []):
            typer.echo(f"  replica {r['slot']} on {r['node']}: v{r['version']} {r['state']} {r['container']}")
    if info.get("cleanup"):
        typer.echo(f"clean-up: {info['cleanup']}")
    loaded = info["config"] or {}
    typer.echo(f"model {info['model']!r}: serves {shown(loaded.get('versions'))}, "
               f"labels {shown(loaded.get('labels'))}")
    typer.echo(f"states {shown(info['states'], 'not read')}; versions on host {shown(info['on_host'])}")
    for version, evaluation in sorted(info["evaluation"].items(), key=lambda item: int(item[0])):
        typer.echo(f"  v{version}: {evaluation['summary']}")
    if info["evaluation_error"]:
        typer.echo(f"evaluation not shown: {info['evaluation_error']}")
    supervision = info.get("supervisor") or {}
    if supervision.get("restarts"):
        typer.echo(f"restarted {supervision['restarts']} time(s); last exit: "
                   f"{supervision.get('last_exit') or supervision.get('last_exit_code')}")


serve_app = typer.Typer(help="The serving runtime itself (stop, unlock, purge).", no_args_is_help=True,
                        add_completion=False)


@serve_app.command("stop")
def serve_stop(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
               debug: DebugOpt = False) -> None:
    """Stop the serving runtime gracefully (delivered versions and config stay)."""
    cfg = load_cfg(config, set_)
    target = open_target(cfg.rollout, cfg.run.workdir)
    was = target.running()
    target.stop()
    if as_json:
        emit({"ok": True, "target": target.kind, "was_running": was, "running": target.running()})
    else:
        typer.echo("stopped" if was else "not running")


@serve_app.command("unlock")
def serve_unlock(config: ConfigOpt = None, set_: SetOpt = None,
                 force: Annotated[bool, typer.Option("--force", help="Remove it even if its holder still runs "
                                                                     "on this machine.")] = False,
                 as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Remove the rollout lock of a crashed rollout (a live holder on this machine is refused)."""
    cfg = load_cfg(config, set_)
    removed = open_target(cfg.rollout, cfg.run.workdir).force_unlock(even_if_alive=force)
    if as_json:
        emit({"ok": True, "removed": removed})
    else:
        typer.echo("lock removed" if removed else "no lock")


@serve_app.command("purge")
def serve_purge(config: ConfigOpt = None, set_: SetOpt = None,
                yes: Annotated[bool, typer.Option("--yes", help="Do it: delivered versions are deleted.")] = False,
                as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Stop the runtime and remove all it leaves: container, volume, delivered versions, config, logs."""
    cfg = load_cfg(config, set_)
    target = open_target(cfg.rollout, cfg.run.workdir)
    if not yes:
        raise RolloutError(f"`serve purge` deletes the {target.kind} runtime and every version delivered to it; "
                           "re-run with --yes to do it")
    target.force_unlock()  # a rollout still running here is refused: purge must not pull the floor
    removed = target.purge()
    if as_json:
        emit({"ok": True, "target": target.kind, "removed": removed})
    else:
        typer.echo("removed " + ", ".join(removed) if removed else "nothing to remove")
