"""`tfrollout push` and `tfrollout storage ls|pull|gc|unlock`: the storage layer on the command line.

This module is on the path of every CI push, so it imports only the storage layer
(boto3 loads inside it, while the files hash) — no gRPC, numpy or TensorFlow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.commands.common import (
    ConfigOpt,
    DebugOpt,
    JsonOpt,
    SetOpt,
    emit,
    human_bytes,
    load_cfg,
)
from pipeline.config import DeployConfig
from pipeline.errors import StorageError
from pipeline.progress import Reporter
from pipeline.results import PushOutput
from pipeline.run import run_pipeline
from pipeline.storage import open_store
from pipeline.storage.gc import collect_garbage
from pipeline.storage.lock import force_unlock, live_locks
from pipeline.storage.manifest import read_export_metadata
from pipeline.storage.publish import open_and_hash, push_configured
from pipeline.storage.pull import pick_version
from pipeline.storage.reserve import is_stale as reservation_stale
from pipeline.storage.reserve import reservations

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the content of a committed version (only to "
                                        "repair one no runtime serves; a new export gets a fresh number instead).")]
CreateOpt = Annotated[bool, typer.Option("--create-bucket", help="Create the S3 bucket if it is missing.")]
UriOpt = Annotated[str | None, typer.Option("--uri", help="Store URI (overrides storage.uri).")]


def storage_overrides(uri: str | None = None, force: bool = False, create: bool = False) -> list[str]:
    """Storage flags as `--set` assignments (flags win over the config file)."""
    extra = []
    if uri:
        extra.append(f"storage.uri={json.dumps(uri)}")
    if force:
        extra.append("storage.force=true")
    if create:
        extra.append("storage.create_bucket=true")
    return extra


def infer_identity(version_dir: Path, model_name: str | None, version: int | None) -> tuple[str, int]:
    """Name/version from flags, else the export manifest, else `<name>/<version>` directory names."""
    meta = read_export_metadata(version_dir) if version_dir.is_dir() else {}
    name = model_name or meta.get("model_name") or version_dir.resolve().parent.name
    if version is None:
        raw = meta.get("version", version_dir.name)
        if not str(raw).isdigit():
            raise StorageError(f"cannot tell the version of {version_dir}; pass --version")
        version = int(raw)
    return str(name), version


def push_directory(cfg: DeployConfig, version_dir: Path, model_name: str | None, version: int | None,
                   reporter: Reporter) -> PushOutput:
    """Push any version directory (not the run's export) as `storage.*` says."""
    from pipeline.verify.golden import refuse_non_finite_golden

    name, number = infer_identity(version_dir, model_name, version)
    refuse_non_finite_golden(version_dir, cfg.verify.allow_non_finite)
    store, local = open_and_hash(cfg.storage, version_dir, name, number)
    return push_configured(store, cfg.storage, version_dir, name, number, local=local,
                           progress=lambda total: reporter.progress(f"push {name}/{number}", total,
                                                                    unit="bytes"))


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
    cfg = load_cfg(config, set_, storage_overrides(uri, force, create_bucket))
    reporter = Reporter(quiet=as_json)
    if version_dir is None:
        summary = run_pipeline(cfg, reporter, from_stage="push", until_stage="push")
        result = summary.record.output(PushOutput)
    else:
        result = push_directory(cfg, version_dir, model_name, version, reporter)
    if as_json:
        emit({"ok": True, **result.model_dump(mode="json")})
        return
    state = "already committed (0 bytes sent)" if result.already_committed else "committed"
    typer.echo(f"{result.uri} {state}: {result.files_uploaded} files / "
               f"{human_bytes(result.bytes_uploaded)} sent, {result.files_skipped} files / "
               f"{human_bytes(result.bytes_skipped)} already there, {result.duration_s} s")


storage_app = typer.Typer(help="Inspect and maintain the model store (storage.uri).", no_args_is_help=True,
                          add_completion=False)


def list_store(cfg: DeployConfig, model: str | None) -> dict[str, Any]:
    """Versions (committed or not) and pushes in progress, as the `--json` report."""
    store = open_store(cfg.storage)
    now = time.time()
    pushing = live_locks(store, stale_after_s=cfg.storage.lock_stale_s, now=now, model=model)
    reserved = reservations(store, model)
    return {"ok": True, "uri": store.uri, "versions": [v.to_json() for v in store.list_versions(model)],
            "pushing": [{"model": m, "version": n, "owner": h.owner, "since": h.acquired_at}
                        for (m, n), h in sorted(pushing.items())],
            "reserved": [{"model": m, "version": n, "owner": h.owner if h else "unreadable reservation",
                          "run_id": h.run_id if h else None, "since": h.reserved_at if h else None,
                          "stale": reservation_stale(h, now, cfg.storage.reservation_stale_s)}
                         for (m, n), h in sorted(reserved.items())]}


def evaluation_text(export: dict[str, Any] | None) -> str:
    """`acc 0.812 vs scratch 0.790, gate passed` from a version's export manifest (pure)."""
    if not export:
        return ""
    metrics = export.get("metrics") or {}
    parts = []
    if isinstance(metrics.get("test_accuracy"), (int, float)):
        text = f"acc {metrics['test_accuracy']:.3f}"
        if isinstance(metrics.get("baseline_test_accuracy"), (int, float)):
            text += f" vs scratch {metrics['baseline_test_accuracy']:.3f}"
        parts.append(text)
    gate = export.get("quality_gate")
    if isinstance(gate, dict):
        if gate.get("passed") is True:
            parts.append("gate passed")
        elif gate.get("overridden"):
            parts.append("gate FAILED, published with gate.enforce=false")
        else:
            parts.append("gate not passed")
    return ", ".join(parts)


def listing_lines(report: dict[str, Any]) -> list[str]:
    """The human listing of `list_store`'s report (pure)."""
    versions, pushing, reserved = report["versions"], report["pushing"], report.get("reserved", [])
    if not versions and not pushing and not reserved:
        return [f"{report['uri']}: no versions"]
    busy = {(p["model"], p["version"]): p["owner"] for p in pushing}
    lines = []
    for v in versions:
        state = "committed" if v["committed"] else f"UNCOMMITTED ({'; '.join(v['problems'][:2])})"
        if (v["model"], v["version"]) in busy:
            state += f"; push in progress by {busy[(v['model'], v['version'])]}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["last_modified"]))
        evaluation = evaluation_text(v.get("export"))
        lines.append(f"{v['model']:<20} {v['version']:>6}  {human_bytes(v['bytes']):>9}  {v['files']:>3} files"
                     f"  {stamp}  {state}{'  ' + evaluation if evaluation else ''}")
    listed = {(v["model"], v["version"]) for v in versions}
    for (name, number), owner in sorted(busy.items()):
        if (name, number) not in listed:
            lines.append(f"{name:<20} {number:>6}  push in progress by {owner} (nothing stored yet)")
            listed.add((name, number))
    for r in reserved:
        if (r["model"], r["version"]) not in listed:
            state = "STALE reservation (gc removes it)" if r["stale"] else "reserved by an export"
            lines.append(f"{r['model']:<20} {r['version']:>6}  {state}: {r['owner']}"
                         f"{', run ' + r['run_id'] if r['run_id'] else ''} (nothing stored yet)")
    return lines


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
    report = list_store(load_cfg(config, set_, storage_overrides(uri)), model)
    if as_json:
        emit(report)
        return
    for line in listing_lines(report):
        typer.echo(line)


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
    cfg = load_cfg(config, set_, storage_overrides(uri))
    store = open_store(cfg.storage)
    info = pick_version(store.list_versions(model, version), model, version)
    target = dest or Path("pulled") / model / str(info.version)
    t0 = time.perf_counter()
    path = store.pull(model, info.version, target, info=info)
    result = {"model": model, "version": info.version, "dest": str(path), "files": info.files,
              "bytes": info.bytes, "duration_s": round(time.perf_counter() - t0, 3)}
    if as_json:
        emit({"ok": True, **result})
    else:
        typer.echo(f"pulled {model} v{info.version} to {path} "
                   f"({info.files} files, {human_bytes(info.bytes)}, all sha256 verified)")


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
    cfg = load_cfg(config, set_, storage_overrides(uri))
    holder = force_unlock(open_store(cfg.storage), model, version)
    if as_json:
        emit({"ok": True, "model": model, "version": version, "removed": holder is not None,
              "holder": holder.owner if holder else None,
              "acquired_at": holder.acquired_at if holder else None})
    elif holder is not None:
        typer.echo(f"removed the push lock of {model} v{version} (held by {holder.owner})")
    else:
        typer.echo(f"{model} v{version} has no push lock")


@storage_app.command("gc")
def gc(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Committed versions to keep per model.")] = 3,
    grace: Annotated[float | None, typer.Option("--grace", min=0, help="Seconds an uncommitted version "
                                                "is left alone (default storage.gc_grace_s).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be deleted.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Proceed when the serving runtime cannot be asked what "
                                        "it serves (its persisted labels are still kept); the report names "
                                        "what was not checked.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    uri: UriOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Delete committed versions beyond --keep and stale leftovers; never what the runtime serves
    (loaded, labelled, or the version `rollback` returns to)."""
    from pipeline.rollout.served import gc_protection  # gRPC: only for gc

    cfg = load_cfg(config, set_, storage_overrides(uri))
    store = open_store(cfg.storage)
    versions = store.list_versions()
    protected, runtime = gc_protection(cfg, versions, force=force)
    report = collect_garbage(store, keep=keep, grace_s=cfg.storage.gc_grace_s if grace is None else grace,
                             now=time.time(), dry_run=dry_run, lock_stale_s=cfg.storage.lock_stale_s,
                             protected=protected, versions=versions,
                             reservation_stale_s=cfg.storage.reservation_stale_s)
    report["runtime"] = runtime
    if as_json:
        emit({"ok": True, **report})
        return
    verb = "would delete" if dry_run else "deleted"
    busy = f"; push in progress, untouched: {report['pushing']}" if report["pushing"] else ""
    served = f"; served, untouched: {report['served']}" if report["served"] else ""
    unchecked = f"; NOT CHECKED (--force): {'; '.join(runtime['unchecked'])}" if runtime["unchecked"] else ""
    reserved = report["deleted_reservations"]
    unreserved = f"; reservations {'to drop' if dry_run else 'dropped'}: {reserved}" if reserved else ""
    freed = report["bytes_freed"]
    assert isinstance(freed, int)
    typer.echo(f"{verb}: committed {report['deleted_committed'] or '-'}, stale {report['deleted_stale'] or '-'}"
               f" ({human_bytes(freed)}); kept {report['kept'] or '-'}{served}{busy}{unreserved}{unchecked}")
