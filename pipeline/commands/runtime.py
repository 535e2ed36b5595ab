"""`tfrollout rollout | rollback | status | serve stop | serve unlock`: drive the serving target.

None of these import TensorFlow: the host speaks ModelService through the light
`serving.client`, and the golden set is plain numpy — so `status` answers in a fraction
of a second, even on a CI runner.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pipeline.commands.common import ConfigOpt, DebugOpt, JsonOpt, ModelOpt, SetOpt, emit, load_cfg
from pipeline.config import DeployConfig
from pipeline.errors import RolloutError, StorageError
from pipeline.progress import Reporter
from pipeline.rollout.engines import RolloutResult, open_engine
from pipeline.rollout.host import ServingHost, read_served
from pipeline.rollout.session import committed_version
from pipeline.run import last_export
from pipeline.targets import ReloadableTarget, open_target


def model_or_last(cfg: DeployConfig, model: str | None) -> str:
    """The model a command acts on: the flag, else the last run's export, else `export.model_name`."""
    if model:
        return model
    export = last_export(cfg)
    return export.model_name if export is not None else cfg.export.model_name


def finish_owed_clean_up(cfg: DeployConfig, model: str) -> str | None:
    """Clean-up an earlier promotion still owes, finished now (see rollout.pending); None if none."""
    return open_engine(cfg).finish_clean_up(model)


def status_report(cfg: DeployConfig, model: str) -> dict[str, Any]:
    """What the host's config serves, the runtime's health and the live version states."""
    target = open_target(cfg.rollout, cfg.run.workdir)
    # one runtime: its promotion history and per-version states; a replicated service (swarm)
    # answers on a shared port for a random replica, so its per-replica rows come from describe()
    host = ServingHost(target, None) if isinstance(target, ReloadableTarget) else None
    try:
        served = read_served(target, model)
        info: dict[str, Any] = {"ok": True, "model": model, **target.describe(),
                                "config": served.to_json() if served else None,
                                "on_host": target.versions(model), "states": None,
                                "promoted": host.promotions(model) if host is not None else None}
        if info["running"] and host is not None:
            try:
                info["states"] = {str(v): s for v, (s, _) in host.states(model, 5.0).items()}
            except Exception as exc:  # noqa: BLE001 - a sick runtime is a status, not a crash
                info["states_error"] = str(exc)
                info["ok"] = False
        wanted = set(served.versions if served else ()) | set(info["on_host"] or ())
        info["evaluation"], info["evaluation_error"] = version_evaluations(cfg, model, wanted)
        return info
    finally:
        if host is not None:
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


def _print_result(result: RolloutResult, as_json: bool) -> None:
    if as_json:
        emit(result.to_json())
        return
    for line in result.lines:
        typer.echo(line)
    for line in result.warnings:
        typer.echo(line, err=True)


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
    from pipeline.stages.rollout import check_before_rollout

    name = model_or_last(cfg, model)
    store, wanted = committed_version(cfg, name, version)
    check_before_rollout(cfg, store, name, wanted, note)
    engine = open_engine(cfg, last=last_export(cfg))
    _print_result(engine.rollout(name, wanted, store=store, golden=None, verify=not no_verify), as_json)


def rollback(config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
             no_verify: Annotated[bool, typer.Option("--no-verify", help="Restore without checking the version's "
                                                     "golden set (e.g. the store is unreachable).")] = False,
             as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Restore service: drop an unfinished canary, else go back to the previous committed version on the host."""
    cfg = load_cfg(config, set_)
    engine = open_engine(cfg, last=last_export(cfg))
    _print_result(engine.rollback(model_or_last(cfg, model), verify=not no_verify), as_json)


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
