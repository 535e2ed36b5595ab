"""`tfrollout verify | predict | loadtest`: talk to a served model with the light gRPC client.

Imports of numpy, gRPC and the client stay inside the commands so `tfrollout
--help` stays instant. Client failures become one `error:` line with exit 8.
"""


import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

TargetOpt = Annotated[str | None, typer.Option("--target", help="host:port of the gRPC endpoint (default: verify.target).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Model name (default: the last export's, else export.model_name).")]
VersionOpt = Annotated[int | None, typer.Option("--version", min=1, help="Ask for this version.")]
LabelOpt = Annotated[str | None, typer.Option("--label", help="Ask for the version under this label.")]
SignatureOpt = Annotated[str | None, typer.Option("--signature", help="Signature (default: verify.signature).")]
CaOpt = Annotated[Path | None, typer.Option("--ca-cert", help="Server CA (PEM); enables TLS.")]
CertOpt = Annotated[Path | None, typer.Option("--client-cert", help="Client certificate (PEM) for mutual TLS.")]
KeyOpt = Annotated[Path | None, typer.Option("--client-key", help="Client key (PEM) for mutual TLS.")]
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", min=0.01, help="Seconds per call (default: verify.deadline_s).")]


@contextmanager
def client_errors_as_verify_errors() -> Iterator[None]:
    """serving.client cannot know pipeline errors; translate at this edge."""
    from pipeline.errors import VerifyError
    from serving.client import ClientError, CodecError

    try:
        yield
    except (ClientError, CodecError) as exc:
        raise VerifyError(str(exc)) from None


def _last_export(cfg: Any) -> dict[str, Any] | None:
    from pipeline.run import load_record

    record = load_record(cfg)
    stage = record.stages.get("export") if record else None
    return stage.outputs if stage is not None and stage.status == "ok" else None


def _target(cfg: Any, target: str | None, model: str | None, version: int | None, label: str | None,
            signature: str | None, ca: Path | None, cert: Path | None, key: Path | None,
            export: dict[str, Any] | None) -> Any:
    from pipeline.errors import VerifyError
    from pipeline.verify.runner import Target

    v = cfg.verify
    if version is not None and label is not None:
        raise VerifyError("give --version or --label, not both")
    if version is None and label is None:
        label = v.label
        version = v.version if label is None else None
    name = model or (export or {}).get("model_name") or cfg.export.model_name
    return Target(target or v.target, name, version, label, signature or v.signature,
                  ca or v.ca_cert, cert or v.client_cert, key or v.client_key, v.server_name)


def read_inputs(path: Path, input_name: str | None) -> dict[str, Any]:
    """`.npy` (one input), `.npz` (names, `input.` prefix allowed), or JSON `{name: nested list}`."""
    import numpy as np

    from pipeline.errors import VerifyError

    if not path.is_file():
        raise VerifyError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {input_name or "": np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k.removeprefix("input."): data[k] for k in data.files if not k.startswith("output.")}
            return {input_name: next(iter(arrays.values()))} if input_name and len(arrays) == 1 else arrays
        if suffix == ".json":
            data = json.loads(path.read_text())
            data = data.get("inputs", data) if isinstance(data, dict) else data
            if isinstance(data, dict):
                return {k: np.asarray(v) for k, v in data.items()}
            return {input_name or "": np.asarray(data)}
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot read inputs from {path}: {exc}") from None
    raise VerifyError(f"input file {path}: expected .npy, .npz or .json")


def fit_to_signature(inputs: dict[str, Any], signature: Any, *, cast: bool = False) -> dict[str, Any]:
    """Name an unnamed single input; with `cast`, convert (JSON-born) arrays to the served dtypes.

    Binary inputs (.npy/.npz) are not cast, so a dtype mismatch there is reported, not hidden.
    """
    import numpy as np

    from pipeline.errors import VerifyError
    from serving.client._generated.tfrollout_wire_pb2 import DataType
    from serving.client.codec import numpy_dtype

    inputs = dict(inputs)
    if "" in inputs:
        if len(signature.inputs) != 1:
            raise VerifyError(f"the signature takes {sorted(signature.inputs)}; name the input "
                              "with --input-name")
        inputs = {next(iter(signature.inputs)): inputs.pop(""), **inputs}
    if not cast:
        return inputs
    fitted = {}
    for name, value in inputs.items():
        spec = signature.inputs.get(name)
        array = np.asarray(value)
        if spec is not None and spec.dtype in DataType.keys() and array.dtype.kind in "fiub":
            target = numpy_dtype(DataType.Value(spec.dtype))
            if array.dtype != target and np.can_cast(array.dtype, target, casting="same_kind"):
                array = array.astype(target)
        fitted[name] = array
    return fitted


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lat = report["latency_ms"]
    agree = report["agreement"]
    return [f"target {report['target']} model {report['model']!r} "
            f"{'version ' + str(report['version']) if report['version'] else 'label ' + repr(report['label']) if report['label'] else 'latest'}"
            f" (served {report['served_versions']})",
            f"examples {report['examples']} in {report['requests']} requests; max abs diff "
            f"{report['max_abs_diff']:.3g}; top-1 agreement {'n/a' if agree is None else f'{agree:.3f}'}",
            f"latency ms p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')}"]


def register(app: typer.Typer) -> None:
    """Mount verify, predict and loadtest on the main app."""
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

    @app.command("verify")
    def verify(
        config: ConfigOpt = None, set_: SetOpt = None, target: TargetOpt = None, model: ModelOpt = None,
        version: VersionOpt = None, label: LabelOpt = None, signature: SignatureOpt = None,
        golden: Annotated[Path | None, typer.Option("--golden", help="Golden .npz (or an export version dir); default: the last run's export.")] = None,
        atol: Annotated[float | None, typer.Option("--atol", min=0.0, help="Absolute tolerance (default verify.atol).")] = None,
        rtol: Annotated[float | None, typer.Option("--rtol", min=0.0, help="Relative tolerance (default verify.rtol).")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Examples per request.")] = None,
        ca_cert: CaOpt = None, client_cert: CertOpt = None, client_key: KeyOpt = None,
        deadline: DeadlineOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
    ) -> None:
        """Send the golden set to the served model and compare with the exported outputs."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            from pipeline.errors import VerifyError
            from pipeline.verify.compare import Tolerance
            from pipeline.verify.golden import load_golden
            from pipeline.verify.runner import verify_served

            export = _last_export(cfg)
            if golden is None and export is None:
                raise VerifyError("no --golden given and no successful export in the run record "
                                  f"({cfg.run.workdir}); run `tfrollout export` or pass --golden")
            path = golden or Path(export["golden"])
            spec = _target(cfg, target, model, version, label, signature, ca_cert, client_cert,
                           client_key, export if golden is None else None)
            if golden is None and spec.version is None and spec.label is None:
                spec = type(spec)(**{**spec.__dict__, "version": export.get("version")})
            v = cfg.verify
            tol = Tolerance(v.atol if atol is None else atol, v.rtol if rtol is None else rtol,
                            v.min_agreement)
            return verify_served(spec, load_golden(path), tol, deadline_s=deadline or v.deadline_s,
                                 batch_size=batch_size or v.batch_size)

        report = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit(report)
        else:
            for line in _summary_lines(report):
                typer.echo(line)
        if not report["ok"]:
            typer.echo(f"error: served model does not match the golden set: {report['reason']}", err=True)
            raise typer.Exit(8)
        if not as_json:
            typer.echo("ok: served predictions match the golden set")

    @app.command("predict")
    def predict(
        input_path: Annotated[Path, typer.Option("--input", "-i", help=".npy, .npz or .json inputs.")],
        config: ConfigOpt = None, set_: SetOpt = None, target: TargetOpt = None, model: ModelOpt = None,
        version: VersionOpt = None, label: LabelOpt = None, signature: SignatureOpt = None,
        input_name: Annotated[str | None, typer.Option("--input-name", help="Input name for a .npy or a bare JSON list.")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Save outputs (.npz, .npy for one output, or .json).")] = None,
        ca_cert: CaOpt = None, client_cert: CertOpt = None, client_key: KeyOpt = None,
        deadline: DeadlineOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False,
    ) -> None:
        """Send one request and print (or save) the outputs."""
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            import numpy as np

            from pipeline.verify.runner import make_client

            spec = _target(cfg, target, model, version, label, signature, ca_cert, client_cert,
                           client_key, _last_export(cfg))
            raw = read_inputs(input_path, input_name)
            with make_client(spec, deadline or cfg.verify.deadline_s) as client, \
                    client_errors_as_verify_errors():
                sig = client.signature(spec.model, spec.signature, version=spec.version, label=spec.label)
                cast = input_path.suffix.lower() == ".json"
                result = client.predict_detailed(spec.model, fit_to_signature(raw, sig, cast=cast),
                                                 version=spec.version, label=spec.label,
                                                 signature=spec.signature)
            outputs = result.outputs
            if out is not None:
                _save_outputs(out, outputs)
            return {"ok": True, "model": result.model, "version": result.version,
                    "saved": str(out) if out else None,
                    "outputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape),
                                    "values": None if out else _jsonable(np, v)}
                                for k, v in outputs.items()}}

        result = guarded(work, debug=debug, as_json=as_json)
        if as_json:
            emit(result)
            return
        typer.echo(f"model {result['model']!r} version {result['version']}")
        for name, info in result["outputs"].items():
            typer.echo(f"{name}: {info['dtype']} {info['shape']}")
            if info["values"] is not None:
                typer.echo(json.dumps(info["values"]))
        if result["saved"]:
            typer.echo(f"saved outputs to {result['saved']}")

    @app.command("loadtest")
    def loadtest(
        config: ConfigOpt = None, set_: SetOpt = None, target: TargetOpt = None, model: ModelOpt = None,
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
        cfg = resolve_config(config, set_, debug=debug, as_json=as_json)

        def work() -> dict[str, Any]:
            from pipeline.verify.runner import make_client
            from serving.client import run_load

            export = _last_export(cfg)
            spec = _target(cfg, target, model, version, label, signature, ca_cert, client_cert,
                           client_key, export)
            with make_client(spec, deadline or cfg.verify.deadline_s) as client, \
                    client_errors_as_verify_errors():
                sig = client.signature(spec.model, spec.signature, version=spec.version, label=spec.label)
                inputs = _load_inputs(input_path, input_name, export, sig, batch)
                report = run_load(client, spec.model, inputs, concurrency=concurrency,
                                  duration_s=duration, count=count, version=spec.version,
                                  label=spec.label, signature=spec.signature)
            data = report.to_json()
            data.update(target=spec.address, model=spec.model, version=spec.version,
                        label=spec.label, concurrency=concurrency, batch=batch)
            data["ok"] = data["requests"] > 0 and (data["requests"] - data["ok"]) / data["requests"] <= max_error_rate
            return data

        data = guarded(work, debug=debug, as_json=as_json)
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


def _jsonable(np: Any, value: Any) -> Any:
    if value.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value.ravel().tolist()]
    return value.tolist()


def _save_outputs(path: Path, outputs: dict[str, Any]) -> None:
    import numpy as np

    from pipeline.errors import VerifyError

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, **{f"output.{k}": v for k, v in outputs.items()})
    elif suffix == ".npy":
        if len(outputs) != 1:
            raise VerifyError(f"--out {path}: .npy holds one output, got {sorted(outputs)}; use .npz")
        np.save(path, next(iter(outputs.values())))
    elif suffix == ".json":
        path.write_text(json.dumps({k: _jsonable(np, v) for k, v in outputs.items()}))
    else:
        raise VerifyError(f"--out {path}: expected .npz, .npy or .json")


def _load_inputs(path: Path | None, name: str | None, export: dict[str, Any] | None, sig: Any,
                 batch: int) -> dict[str, Any]:
    """Explicit file, else the golden inputs, else zeros shaped like the signature; `batch` rows."""
    import numpy as np

    from serving.client._generated.tfrollout_wire_pb2 import DataType
    from serving.client.codec import numpy_dtype

    if path is not None:
        inputs = fit_to_signature(read_inputs(path, name), sig, cast=path.suffix.lower() == ".json")
    elif export is not None and Path(export.get("golden", "")).is_file():
        from pipeline.verify.golden import load_golden

        inputs = load_golden(Path(export["golden"])).inputs
    else:
        inputs = {}
        for key, spec in sig.inputs.items():
            shape = [1 if d < 0 else d for d in (spec.shape or ())]
            inputs[key] = np.zeros(shape, dtype=numpy_dtype(DataType.Value(spec.dtype)))
    out = {}
    for key, value in inputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] == 0:
            out[key] = value
            continue
        reps = -(-batch // value.shape[0])
        out[key] = np.concatenate([value] * reps)[:batch]
    return out
