"""`tfrollout verify | predict | loadtest`: talk to a served model with the light gRPC client.

Client failures become one `error:` line with exit 8 (VerifyError). No TensorFlow here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pipeline.commands.common import (
    ConfigOpt,
    DebugOpt,
    JsonOpt,
    ModelOpt,
    SetOpt,
    emit,
    fail,
    load_cfg,
)
from pipeline.config import DeployConfig
from pipeline.errors import VerifyError
from pipeline.results import ExportOutput
from pipeline.run import last_export
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import (
    Endpoint,
    ServedModel,
    make_client,
    verify_endpoint,
    verify_served,
)
from pipeline.verify.tensor_files import (
    fit_to_signature,
    jsonable,
    load_test_inputs,
    read_inputs,
    save_outputs,
)
from serving.client import ClientError, CodecError, run_load

EndpointOpt = Annotated[str | None, typer.Option("--endpoint", "--target",
                                                 help="host:port of the gRPC endpoint, or a list "
                                                      "a:1,b:2 / dns:///name:port (round_robin; verify checks "
                                                      "each listed address) (default: verify.endpoint; --target "
                                                      "is the old name).")]
VersionOpt = Annotated[int | None, typer.Option("--version", min=1, help="Ask for this version.")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="Ask for the version under this label.")]
SignatureOpt = Annotated[str | None, typer.Option("--signature", help="Signature (default: verify.signature).")]
CaOpt = Annotated[Path | None, typer.Option("--ca-cert", help="Server CA (PEM); enables TLS.")]
CertOpt = Annotated[Path | None, typer.Option("--client-cert", help="Client certificate (PEM) for mutual TLS.")]
KeyOpt = Annotated[Path | None, typer.Option("--client-key", help="Client key (PEM) for mutual TLS.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", min=0.01,
                                                   help="Seconds per call (default: verify.deadline_s).")]


@contextmanager
def client_errors_as_verify_errors() -> Iterator[None]:
    """serving.client cannot know pipeline errors; translate at this edge."""
    try:
        yield
    except (ClientError, CodecError) as exc:
        raise VerifyError(str(exc)) from None


def resolve_request(cfg: DeployConfig, *, address: str | None, model: str | None, version: int | None,
                    label: str | None, signature: str | None, ca_cert: Path | None = None,
                    client_cert: Path | None = None, client_key: Path | None = None,
                    export: ExportOutput | None = None) -> tuple[Endpoint, ServedModel]:
    """Flags over `[verify]` (TLS files included), model from the flag, the export or the config (pure)."""
    if version is not None and label is not None:
        raise VerifyError("give --version or --label, not both")
    v = cfg.verify
    if version is None and label is None:
        label = v.label
        version = v.version if label is None else None
    tls_flags = {"ca_cert": ca_cert, "client_cert": client_cert, "client_key": client_key}
    v = v.model_copy(update={k: value for k, value in tls_flags.items() if value is not None})
    name = model or (export.model_name if export is not None else cfg.export.model_name)
    return verify_endpoint(v, cfg.rollout, address), ServedModel(name, version, label, signature or v.signature)


def verify_golden(cfg: DeployConfig, endpoint: Endpoint, wanted: ServedModel, golden: Path, *,
                  atol: float | None, rtol: float | None, deadline: float | None,
                  batch_size: int | None) -> dict[str, Any]:
    """The verify report for one served model against a golden set (flags over `[verify]`)."""
    v = cfg.verify
    tol = Tolerance.of(v, atol, rtol)
    return verify_served(endpoint, wanted, load_golden(golden), tol, deadline_s=deadline or v.deadline_s,
                         batch_size=batch_size or v.batch_size)


def stable_on_host(cfg: DeployConfig, model: str) -> int | None:
    """The version the rollout target's `stable` label serves, or None when the host has no
    such label or cannot be read (then the last export is verified, as before)."""
    from pipeline.rollout.host import read_served
    from pipeline.targets import open_target

    try:
        served = read_served(open_target(cfg.rollout, cfg.run.workdir), model)
        return None if served is None else served.labels.get(cfg.rollout.stable_label)
    except Exception:  # noqa: BLE001 - no readable host: fall back to the export
        return None


def stable_golden(cfg: DeployConfig, model: str, version: int, scratch: Path) -> Path:
    """The golden set of the committed version `stable` serves (see rollout.session.golden_for)."""
    from pipeline.errors import StorageError
    from pipeline.rollout.session import golden_for
    from pipeline.storage import open_store

    try:
        return golden_for(open_store(cfg.storage), model, version, scratch, last_export(cfg))
    except StorageError as exc:
        raise VerifyError(f"stable serves {model!r} version {version}, whose golden set is not in the last "
                          f"export and could not be read from the store: {exc}") from None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The human summary of a verify report (pure)."""
    lat = report["latency_ms"]
    agree = report["agreement"]
    if report["version"]:
        which = f"version {report['version']}"
    else:
        which = f"label {report['label']!r}" if report["label"] else "latest"
    return [f"endpoint {report['endpoint']} model {report['model']!r} {which} "
            f"(served {report['served_versions']})",
            f"examples {report['examples']} in {report['requests']} requests; max abs diff "
            f"{report['max_abs_diff']:.3g}; top-1 agreement {'n/a' if agree is None else f'{agree:.3f}'}",
            f"latency ms p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')}"]


def verify(
    config: ConfigOpt = None, set_: SetOpt = None, endpoint: EndpointOpt = None, model: ModelOpt = None,
    version: VersionOpt = None, label: LabelOpt = None, signature: SignatureOpt = None,
    golden: Annotated[Path | None, typer.Option("--golden", help="Golden .npz (or an export version dir); "
                                                "default: the last run's export.")] = None,
    atol: Annotated[float | None, typer.Option("--atol", min=0.0, help="Absolute tolerance (default verify.atol).")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", min=0.0, help="Relative tolerance (default verify.rtol).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Examples per request.")] = None,
    ca_cert: CaOpt = None, client_cert: CertOpt = None, client_key: KeyOpt = None,
    deadline: DeadlineOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Send the golden set to the served model and compare with the exported outputs."""
    cfg = load_cfg(config, set_)
    export = last_export(cfg)
    if golden is None and export is None:
        raise VerifyError("no --golden given and no successful export in the run record "
                          f"({cfg.run.workdir}); run `tfrollout export` or pass --golden")
    where, wanted = resolve_request(cfg, address=endpoint, model=model, version=version, label=label,
                                    signature=signature, ca_cert=ca_cert, client_cert=client_cert,
                                    client_key=client_key, export=export if golden is None else None)
    with tempfile.TemporaryDirectory(prefix="tfrollout-verify-") as scratch:
        if golden is None:
            assert export is not None
            golden = export.golden
            if wanted.version is None and wanted.label is None:
                stable = None if endpoint is not None else stable_on_host(cfg, wanted.model)
                if stable is not None and stable != export.version:  # e.g. after a rollback
                    golden = stable_golden(cfg, wanted.model, stable, Path(scratch))
                version_wanted = export.version if stable is None else stable
                if not as_json:
                    typer.echo(f"verifying {'stable: ' if stable is not None else ''}"
                               f"{wanted.model!r} version {version_wanted}")
                wanted = ServedModel(wanted.model, version_wanted, None, wanted.signature)
        report = verify_golden(cfg, where, wanted, golden, atol=atol, rtol=rtol, deadline=deadline,
                               batch_size=batch_size)
    if as_json:
        emit(report)
    else:
        for line in summary_lines(report):
            typer.echo(line)
    if not report["ok"]:
        raise fail(f"served model does not match the golden set: {report['reason']}", 8, as_json=False)
    if not as_json:
        typer.echo("ok: served predictions match the golden set")


def version_manifest(cfg: DeployConfig, model: str, version: int | None) -> dict[str, Any] | None:
    """A version's export manifest (classes, preprocess): the local export folder's, else the
    store's; None when neither can be read (predict then shows bare outputs)."""
    # the name from storage.manifest, not model.exporter: importing that loads TensorFlow
    from pipeline.storage.manifest import EXPORT_MANIFEST_NAME

    if version is None:
        return None
    local = Path(cfg.export.root) / model / str(version) / EXPORT_MANIFEST_NAME
    try:
        return dict(json.loads(local.read_text()))
    except (OSError, ValueError):
        pass
    try:
        from pipeline.storage import open_store

        found = open_store(cfg.storage).list_versions(model, version)
        return dict(found[0].manifest.export) if found and found[0].manifest is not None else None
    except Exception:  # noqa: BLE001 - an unreadable store only costs the class names
        return None


def takes_raw_pixels(manifest: dict[str, Any] | None) -> bool:
    """True when the version's signature maps raw 0-255 pixels itself (see preprocess) — pure."""
    mode = ((manifest or {}).get("preprocess") or {}).get("mode")
    return mode not in (None, "none")


def integer_pixels_as_floats(inputs: dict[str, Any], signature: Any, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Integer pixels (e.g. uint8 images) for a float input: cast when the signature takes raw
    pixels; otherwise refuse with the scale it takes (a silent cast would be off by 255x)."""
    out = dict(inputs)
    for name, value in inputs.items():
        spec = signature.inputs.get(name)
        array = np.asarray(value)
        if spec is None or array.dtype.kind not in "iu" or spec.dtype not in ("DT_FLOAT", "DT_HALF", "DT_DOUBLE"):
            continue
        if not takes_raw_pixels(manifest):
            raise VerifyError(f"input {name!r} is {array.dtype} but the signature takes {spec.dtype} in the data "
                              "loaders' scale (this version has no preprocess layer): send floats, e.g. pixels / 255")
        out[name] = array.astype(np.float32)
    return out


def top_classes(outputs: dict[str, np.ndarray], classes: list[str] | None) -> list[str]:
    """Per row of a (rows, classes) probability output: `name (p)` of its best class — pure."""
    if not classes:
        return []
    for values in outputs.values():
        if values.ndim == 2 and values.shape[1] == len(classes) and values.dtype.kind == "f":
            best = np.argmax(values, axis=-1)
            return [f"{classes[int(i)]} ({values[row, int(i)]:.3f})" for row, i in enumerate(best)]
    return []


def predict_file(cfg: DeployConfig, endpoint: Endpoint, wanted: ServedModel, input_path: Path,
                 input_name: str | None, out: Path | None, deadline: float | None,
                 fallback_version: Callable[[], int | None] = lambda: None) -> dict[str, Any]:
    """One Predict with inputs from a file; outputs saved to `out` or returned as values.
    `fallback_version` names the version to expect when none is asked for; it is only looked
    up when an integer input needs the manifest's word before the request."""
    raw = read_inputs(input_path, input_name)
    integers = any(np.asarray(v).dtype.kind in "iu" for v in raw.values())
    manifest = version_manifest(cfg, wanted.model, wanted.version or (fallback_version() if integers else None))
    with make_client(endpoint, deadline or cfg.verify.deadline_s) as client, client_errors_as_verify_errors():
        sig = client.signature(wanted.model, wanted.signature, version=wanted.version, label=wanted.label)
        cast = input_path.suffix.lower() == ".json"
        inputs = fit_to_signature(raw, sig, cast=cast)  # JSON numbers take the served dtypes
        if not cast:
            inputs = integer_pixels_as_floats(inputs, sig, manifest)
        result = client.predict_detailed(wanted.model, inputs,
                                         version=wanted.version, label=wanted.label,
                                         signature=wanted.signature)
    if out is not None:
        save_outputs(out, result.outputs)
    if manifest is None or wanted.version != result.version:
        manifest = version_manifest(cfg, wanted.model, result.version) or manifest
    classes = (manifest or {}).get("classes")
    return {"ok": True, "model": result.model, "version": result.version,
            "saved": str(out) if out else None, "classes": classes,
            "predicted": top_classes(result.outputs, classes),
            "outputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape),
                            "values": None if out else jsonable(v)}
                        for k, v in result.outputs.items()}}


def predict(
    input_path: Annotated[Path, typer.Option("--input", "-i", help=".npy, .npz or .json inputs.")],
    config: ConfigOpt = None, set_: SetOpt = None, endpoint: EndpointOpt = None, model: ModelOpt = None,
    version: VersionOpt = None, label: LabelOpt = None, signature: SignatureOpt = None,
    input_name: Annotated[str | None, typer.Option("--input-name", help="Input name for a .npy or a bare JSON list.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Save outputs (.npz, .npy for one output, or .json).")] = None,
    ca_cert: CaOpt = None, client_cert: CertOpt = None, client_key: KeyOpt = None,
    deadline: DeadlineOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Send one request and print (or save) the outputs."""
    cfg = load_cfg(config, set_)
    where, wanted = resolve_request(cfg, address=endpoint, model=model, version=version, label=label,
                                    signature=signature, ca_cert=ca_cert, client_cert=client_cert,
                                    client_key=client_key, export=last_export(cfg))
    export = last_export(cfg, wanted.model)
    result = predict_file(cfg, where, wanted, input_path, input_name, out, deadline,
                          fallback_version=lambda: (stable_on_host(cfg, wanted.model) if endpoint is None else None)
                          or (export.version if export else None))
    if as_json:
        emit(result)
        return
    typer.echo(f"model {result['model']!r} version {result['version']}")
    for row, best in enumerate(result["predicted"]):
        typer.echo(f"row {row}: {best}")
    for name, info in result["outputs"].items():
        typer.echo(f"{name}: {info['dtype']} {info['shape']}")
        if info["values"] is not None:
            typer.echo(json.dumps(info["values"]))
    if result["saved"]:
        typer.echo(f"saved outputs to {result['saved']}")


def loadtest(
    config: ConfigOpt = None, set_: SetOpt = None, endpoint: EndpointOpt = None, model: ModelOpt = None,
    version: VersionOpt = None, label: LabelOpt = None, signature: SignatureOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=256, help="Parallel callers.")] = 4,
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, max=3600, help="Seconds to run.")] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, max=10_000_000, help="Requests to send.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=4096, help="Examples per request.")] = 1,
    input_path: Annotated[Path | None, typer.Option("--input", "-i", help="Inputs (.npy/.npz/.json); default: golden set or zeros.")] = None,
    input_name: Annotated[str | None, typer.Option("--input-name")] = None,
    max_error_rate: Annotated[float, typer.Option("--max-error-rate", min=0.0, max=1.0, help="Fail above this error fraction.")] = 0.0,
    ca_cert: CaOpt = None, client_cert: CertOpt = None, client_key: KeyOpt = None,
    deadline: DeadlineOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Bounded load test: latency percentiles, QPS and errors by status code (stops by itself)."""
    cfg = load_cfg(config, set_)
    export = last_export(cfg)
    where, wanted = resolve_request(cfg, address=endpoint, model=model, version=version, label=label,
                                    signature=signature, ca_cert=ca_cert, client_cert=client_cert,
                                    client_key=client_key, export=export)
    with make_client(where, deadline or cfg.verify.deadline_s) as client, client_errors_as_verify_errors():
        sig = client.signature(wanted.model, wanted.signature, version=wanted.version, label=wanted.label)
        inputs = load_test_inputs(input_path, input_name, export.golden if export else None, sig, batch)
        report = run_load(client, wanted.model, inputs, concurrency=concurrency, duration_s=duration,
                          count=count, version=wanted.version, label=wanted.label,
                          signature=wanted.signature)
    data = report.to_json()
    data.update(endpoint=where.address, model=wanted.model, version=wanted.version, label=wanted.label,
                concurrency=concurrency, batch=batch)
    data["ok"] = data["requests"] > 0 and (data["requests"] - data["ok"]) / data["requests"] <= max_error_rate
    if as_json:
        emit(data)
    else:
        lat = data["latency_ms"]
        typer.echo(f"{data['requests']} requests in {data['elapsed_s']} s, {data['qps']} ok/s, "
                   f"concurrency {concurrency}, batch {batch}")
        typer.echo(f"latency ms p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} "
                   f"max {lat.get('max')}")
        typer.echo(f"errors: {data['errors'] or 'none'}")
    if not data["ok"]:
        raise fail(f"load test error rate above {max_error_rate:g}: {data['errors']} "
                   f"(first: {data['first_error']})", 8, as_json=False)
