"""`tfrollout push` and `tfrollout storage ls|pull|gc`: the storage layer on the command line."""

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _infer_identity(version_dir: Path, model_name: str | None, version: int | None) -> tuple[str, int]:
    """Name/version from flags, else the export manifest, else `<name>/<version>` directory names."""
    from pipeline.errors import StorageError
    from pipeline.storage.manifest import read_export_metadata

    meta = read_export_metadata(version_dir) if version_dir.is_dir() else {}
    name = model_name or meta.get("model_name") or version_dir.resolve().parent.name
    if version is None:
        raw = meta.get("version", version_dir.name)
        if not str(raw).isdigit():
            raise StorageError(f"cannot tell the version of {version_dir}; pass --version")
        version = int(raw)
    return str(name), version


def register(app: typer.Typer) -> None:
    """Mount `push` and the `storage` group on the main app."""
    from pipeline.cli import ConfigOpt, DebugOpt, JsonOpt, SetOpt, emit, guarded, resolve_config
    from pipeline.progress import Reporter

    storage_app = typer.Typer(help="Inspect and maintain the model store (storage.uri).",
                              no_args_is_help=True)
    app.add_typer(storage_app, name="storage")

    ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite a committed version with different content.")]
    CreateOpt = Annotated[bool, typer.Option("--create-bucket", help="Create the S3 bucket if it is missing.")]
    UriOpt = Annotated[str | None, typer.Option("--uri", help="Store URI (overrides storage.uri).")]

    def overrides(uri: str | None = None, force: bool = False, create: bool = False) -> list[str]:
        extra = []
        if uri:
            extra.append(f"storage.uri={json.dumps(uri)}")
        if force:
            extra.append("storage.force=true")
        if create:
            extra.append("storage.create_bucket=true")
        return extra

    @app.command("push")
    def push(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        version_dir: Annotated[Path | None, typer.Option("--dir", help="Push this version directory instead "
                                                         "of the last run's export.")] = None,
        model_name: Annotated[str | None, typer.Option("--model-name", help="With --dir: model name.")] = None,
        version: Annotated[int | None, typer.Option("--version", min=1, help="With --dir: version.")] = None,
        uri: UriOpt = None,
        force: ForceOpt = False,
        create_bucket: CreateOpt = False,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Publish a version to the store (resumable; a committed version is immutable without --force)."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json,
                             extra=overrides(uri, force, create_bucket))
        reporter = Reporter(quiet=as_json)

        if version_dir is None:
            from pipeline.run import run_pipeline

            summary = guarded(lambda: run_pipeline(cfg, reporter, from_stage="push", until_stage="push"),
                              debug=debug, as_json=as_json)
            result = summary.record.stages["push"].outputs
        else:
            def work() -> dict[str, Any]:
                from pipeline.storage.publish import open_and_hash, push_configured

                name, ver = _infer_identity(version_dir, model_name, version)
                store, local = open_and_hash(cfg.storage, version_dir, name, ver)
                res = push_configured(store, cfg.storage, version_dir, name, ver, local=local,
                                      progress=lambda total: reporter.progress(f"push {name}/{ver}", total,
                                                                               unit="bytes"))
                return res.to_json()

            result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit({"ok": True, **result})
        else:
            state = "already committed (0 bytes sent)" if result["already_committed"] else "committed"
            typer.echo(f"{result['uri']} {state}: {result['files_uploaded']} files / "
                       f"{_human(result['bytes_uploaded'])} sent, {result['files_skipped']} files / "
                       f"{_human(result['bytes_skipped'])} already there, {result['duration_s']} s")

    @storage_app.command("ls")
    def ls(
        model: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        uri: UriOpt = None,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """List models and versions, committed or not, with sizes."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json, extra=overrides(uri))

        def work() -> tuple[str, list[Any], dict[tuple[str, int], Any]]:
            from pipeline.storage import open_store
            from pipeline.storage.lock import live_locks

            store = open_store(cfg.storage)
            pushing = live_locks(store, stale_after_s=cfg.storage.lock_stale_s, now=time.time(), model=model)
            return store.uri, store.list_versions(model), pushing

        store_uri, versions, pushing = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit({"ok": True, "uri": store_uri, "versions": [v.to_json() for v in versions],
                  "pushing": [{"model": m, "version": n, "owner": h.owner, "since": h.acquired_at}
                              for (m, n), h in sorted(pushing.items())]})
            return
        if not versions and not pushing:
            typer.echo(f"{store_uri}: no versions")
            return
        for v in versions:
            state = "committed" if v.committed else f"UNCOMMITTED ({'; '.join(v.problems[:2])})"
            if (v.model, v.version) in pushing:
                state += f"; push in progress by {pushing[(v.model, v.version)].owner}"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.last_modified))
            typer.echo(f"{v.model:<20} {v.version:>6}  {_human(v.bytes):>9}  {v.files:>3} files  {stamp}  {state}")
        listed = {(v.model, v.version) for v in versions}
        for (name, number), holder in sorted(pushing.items()):
            if (name, number) not in listed:
                typer.echo(f"{name:<20} {number:>6}  push in progress by {holder.owner} (nothing stored yet)")

    @storage_app.command("pull")
    def pull(
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int | None, typer.Argument(help="Version (default: newest committed).")] = None,
        dest: Annotated[Path | None, typer.Option("--dest", help="Target directory (must not exist); "
                                                  "default ./pulled/<model>/<version>.")] = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        uri: UriOpt = None,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Download a committed version, verifying every file's sha256 (no partial directory on failure)."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json, extra=overrides(uri))

        def work() -> dict[str, Any]:
            from pipeline.storage import open_store
            from pipeline.storage.pull import pick_version

            store = open_store(cfg.storage)
            info = pick_version(store.list_versions(model, version), model, version)
            target = dest or Path("pulled") / model / str(info.version)
            t0 = time.perf_counter()
            path = store.pull(model, info.version, target, info=info)
            return {"model": model, "version": info.version, "dest": str(path), "files": info.files,
                    "bytes": info.bytes, "duration_s": round(time.perf_counter() - t0, 3)}

        result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit({"ok": True, **result})
        else:
            typer.echo(f"pulled {model} v{result['version']} to {result['dest']} "
                       f"({result['files']} files, {_human(result['bytes'])}, all sha256 verified)")

    @storage_app.command("unlock")
    def unlock(
        model: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(min=1, help="Version whose push lock to remove.")],
        config: ConfigOpt = None,
        set_: SetOpt = None,
        uri: UriOpt = None,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Remove a crashed push's lock on a version (only when no push of it is running)."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json, extra=overrides(uri))

        def work() -> dict[str, Any]:
            from pipeline.storage import open_store
            from pipeline.storage.lock import force_unlock

            holder = force_unlock(open_store(cfg.storage), model, version)
            return {"model": model, "version": version, "removed": holder is not None,
                    "holder": holder.owner if holder else None,
                    "acquired_at": holder.acquired_at if holder else None}

        result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit({"ok": True, **result})
        elif result["removed"]:
            typer.echo(f"removed the push lock of {model} v{version} (held by {result['holder']})")
        else:
            typer.echo(f"{model} v{version} has no push lock")

    @storage_app.command("gc")
    def gc(
        keep: Annotated[int, typer.Option("--keep", min=1, help="Committed versions to keep per model.")] = 3,
        grace: Annotated[float | None, typer.Option("--grace", min=0, help="Seconds an uncommitted version "
                                                    "is left alone (default storage.gc_grace_s).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be deleted.")] = False,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        uri: UriOpt = None,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        """Delete committed versions beyond --keep and stale uncommitted leftovers."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json, extra=overrides(uri))

        def work() -> dict[str, Any]:
            from pipeline.storage import open_store
            from pipeline.storage.gc import collect_garbage

            store = open_store(cfg.storage)
            return collect_garbage(store, keep=keep, grace_s=cfg.storage.gc_grace_s if grace is None else grace,
                                   now=time.time(), dry_run=dry_run, lock_stale_s=cfg.storage.lock_stale_s)

        report = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit({"ok": True, **report})
            return
        verb = "would delete" if dry_run else "deleted"
        busy = f"; push in progress, untouched: {report['pushing']}" if report["pushing"] else ""
        typer.echo(f"{verb}: committed {report['deleted_committed'] or '-'}, stale {report['deleted_stale'] or '-'}"
                   f" ({_human(report['bytes_freed'])}); kept {report['kept'] or '-'}{busy}")
