"""`tfrollout rollout | rollback | status | serve stop | serve unlock`: drive the serving target.

Heavy imports stay inside the commands. Every command takes `--json`.
"""


import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name (default: the last push's, else export.model_name).")]


def _model(cfg: Any, model: str | None) -> str:
    from pipeline.run import load_record

    if model:
        return model
    record = load_record(cfg)
    for stage in ("push", "export"):
        result = record.stages.get(stage) if record else None
        if result is not None and result.status == "ok" and result.outputs.get("model_name"):
            return str(result.outputs["model_name"])
    return cfg.export.model_name


def _last_export(cfg: Any, model: str, version: int) -> dict[str, Any] | None:
    from pipeline.run import load_record

    record = load_record(cfg)
    result = record.stages.get("export") if record else None
    if result is None or result.status != "ok":
        return None
    out = result.outputs
    return out if out.get("model_name") == model and int(out.get("version", -1)) == version else None


def _print_report(report: dict[str, Any], as_json: bool, emit: Any) -> None:
    if as_json:
        emit(report)
        return
    served = report.get("served") or {}
    typer.echo(f"{report.get('action')}: {report.get('model')} stable -> {served.get('labels', {})} "
               f"loaded {served.get('versions')} ({report.get('timings_s')})")


def register(app: typer.Typer) -> None:
    from pipeline.cli import (
        ConfigOpt,
        DebugOpt,
        JsonOpt,
        SetOpt,
        emit,
        fail,
        guarded,
        resolve_config,
    )
    from pipeline.quiet import import_tensorflow_quietly

    serve_app = typer.Typer(help="The serving runtime itself (stop, unlock).", no_args_is_help=True)
    app.add_typer(serve_app, name="serve")

    def failure(exc: Any) -> dict[str, Any]:
        report = getattr(exc, "report", None)
        return report.to_json() if report is not None else {}

    @app.command("rollout")
    def rollout(
        config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
        version: Annotated[int | None, typer.Option("--version", min=1, help="Committed version (default: the newest).")] = None,
        no_verify: Annotated[bool, typer.Option("--no-verify", help="Promote without verifying the canary.")] = False,
        as_json: JsonOpt = False, debug: DebugOpt = False,
    ) -> None:
        """Roll a committed version out: canary -> verify -> promote, or roll back on failure."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)
        holder: dict[str, Any] = {}

        def work() -> dict[str, Any]:
            import_tensorflow_quietly(debug)
            from pipeline.errors import StorageError
            from pipeline.rollout.session import committed_versions, golden_verifier, open_session
            from pipeline.verify.golden import GOLDEN_FILE

            name = _model(cfg, model)
            store, committed = committed_versions(cfg, name)
            if not committed:
                raise StorageError(f"no committed version of {name!r} in {store.uri}")
            want = version or committed[-1]
            if want not in committed:
                raise StorageError(f"{name} version {want} is not committed in {store.uri}")
            session = open_session(cfg, store=store)
            with tempfile.TemporaryDirectory(prefix="tfrollout-golden-") as tmp:
                if not no_verify and cfg.rollout.verify_canary:
                    export = _last_export(cfg, name, want)
                    if export is not None:
                        golden = Path(export["golden"])
                    else:  # the golden set travels inside the committed version
                        golden = store.pull(name, want, Path(tmp) / "v") / GOLDEN_FILE
                    session.machine.verifier = golden_verifier(cfg, session.target.endpoint, name, golden)
                try:
                    report = session.machine.rollout(name, want)
                except Exception as exc:
                    holder["exc"] = exc
                    raise
                finally:
                    session.close()
            return report.to_json()

        result = guarded(work, debug=debug, as_json=as_json, on_error=lambda: failure(holder.get("exc")))
        _print_report(result, as_json, emit)

    @app.command("rollback")
    def rollback(
        config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
        as_json: JsonOpt = False, debug: DebugOpt = False,
    ) -> None:
        """Restore service: drop an unfinished canary, else go back to the previous committed version on the host."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)
        holder: dict[str, Any] = {}

        def work() -> dict[str, Any]:
            import_tensorflow_quietly(debug)
            from pipeline.errors import StorageError
            from pipeline.rollout.session import committed_versions, open_session

            name = _model(cfg, model)
            note = None
            try:
                store, committed = committed_versions(cfg, name)
            except StorageError as exc:  # still restore what the host has
                store, committed, note = None, None, f"store unreachable ({exc}); using versions on the host"
            session = open_session(cfg, store=store) if store is not None or cfg.rollout.model_base_path \
                else _session_without_store(cfg)
            try:
                if committed is None:
                    committed = session.target.versions(name)
                report = session.machine.rollback(name, committed)
            except Exception as exc:
                holder["exc"] = exc
                raise
            finally:
                session.close()
            return {**report.to_json(), "note": note}

        result = guarded(work, debug=debug, as_json=as_json, on_error=lambda: failure(holder.get("exc")))
        _print_report(result, as_json, emit)

    @app.command("status")
    def status(
        config: ConfigOpt = None, set_: SetOpt = None, model: ModelOpt = None,
        as_json: JsonOpt = False, debug: DebugOpt = False,
    ) -> None:
        """What the serving host loads, its labels, the runtime's health and live version states."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            import_tensorflow_quietly(debug)
            from pipeline.rollout.host import ServingHost
            from pipeline.targets import open_target

            name = _model(cfg, model)
            target = open_target(cfg.rollout, cfg.run.workdir)
            host = ServingHost(target, None)
            try:
                served = host.read(name)
                info: dict[str, Any] = {"ok": True, "model": name, **target.describe(),
                                        "config": served.to_json() if served else None,
                                        "on_host": target.versions(name), "states": None}
                if info["running"]:
                    try:
                        info["states"] = {str(v): s for v, (s, _) in host.states(name, 5.0).items()}
                    except Exception as exc:  # noqa: BLE001
                        info["states_error"] = str(exc)
                        info["ok"] = False
                return info
            finally:
                host.close()

        info = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit(info)
            return
        typer.echo(f"target {info['target']} at {info['endpoint']}: "
                   f"{'running' if info['running'] else 'not running'}")
        cfg_info = info["config"] or {}
        typer.echo(f"model {info['model']!r}: loaded {cfg_info.get('versions')} labels {cfg_info.get('labels')}")
        typer.echo(f"states {info['states']}; versions on host {info['on_host']}")

    @serve_app.command("stop")
    def serve_stop(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
                   debug: DebugOpt = False) -> None:
        """Stop the serving runtime gracefully (delivered versions and config stay)."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            import_tensorflow_quietly(debug)
            from pipeline.targets import open_target

            target = open_target(cfg.rollout, cfg.run.workdir)
            was = target.running()
            target.stop()
            return {"ok": True, "target": target.kind, "was_running": was, "running": target.running()}

        result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit(result)
        else:
            typer.echo("stopped" if result["was_running"] else "not running")

    @serve_app.command("unlock")
    def serve_unlock(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
                     debug: DebugOpt = False) -> None:
        """Remove a rollout lock left by a crashed rollout (only when none is running!)."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            import_tensorflow_quietly(debug)
            from pipeline.targets import open_target

            target = open_target(cfg.rollout, cfg.run.workdir)
            return {"ok": True, "removed": target.force_unlock()}

        result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit(result)
        else:
            typer.echo("lock removed" if result["removed"] else "no lock")

    _ = (fail, json)


def _session_without_store(cfg: Any) -> Any:
    """A session that can restore/relabel versions already on the host (no delivery possible)."""
    from pipeline.rollout.host import ServingHost
    from pipeline.rollout.machine import Machine, wall_clock_owner
    from pipeline.rollout.session import Session
    from pipeline.targets import open_target

    target = open_target(cfg.rollout, cfg.run.workdir)
    host = ServingHost(target, None, lock_stale_s=cfg.rollout.lock_stale_s)
    host.has_version = lambda model, version: version in target.versions(model)  # type: ignore[method-assign]
    machine = Machine(host, None, stable_label=cfg.rollout.stable_label, canary_label=cfg.rollout.canary_label,
                      owner=wall_clock_owner())
    return Session(target, host, machine)
