"""The edge of verify: send the golden inputs to the served model, time each call, compare.

Client errors (unreachable, TLS, unknown model/label, signature mismatch) become
`VerifyError` lines here, so the CLI shows them as one line with exit code 8.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import RolloutConfig, VerifyConfig
from pipeline.errors import VerifyError
from pipeline.verify.compare import Tolerance, compare
from pipeline.verify.golden import Golden
from serving.client import ClientError, CodecError, PredictionClient, TLSConfig, percentiles_ms
from serving.client.endpoints import split_endpoints


@dataclass(frozen=True)
class Endpoint:
    """How to reach a served model over gRPC: address plus TLS files (none = plaintext)."""

    address: str
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    def tls(self) -> TLSConfig | None:
        """TLS when a CA or a client certificate is given."""
        if self.ca_cert is None and self.client_cert is None:
            return None
        return TLSConfig(self.ca_cert, self.client_cert, self.client_key, self.server_name)


@dataclass(frozen=True)
class ServedModel:
    """What to ask the endpoint for: a model by version or label (neither = latest), one signature."""

    model: str
    version: int | None = None
    label: str | None = None
    signature: str = "serving_default"

    def describe(self) -> str:
        which = f" version {self.version}" if self.version is not None else (
            f" label {self.label!r}" if self.label else "")
        return f"{self.model!r}{which}"


def verify_endpoint(verify: VerifyConfig, rollout: RolloutConfig, address: str | None = None) -> Endpoint:
    """The one place an Endpoint is built from the config, TLS files included.

    Address: `address` (a flag, a rollout's endpoint) > `verify.endpoint` > the rollout
    target's `host:grpc_port` — so changing `rollout.grpc_port` moves verify and predict too.
    """
    where = address or verify.endpoint or f"{rollout.host}:{rollout.grpc_port}"
    return Endpoint(where, verify.ca_cert, verify.client_cert, verify.client_key, verify.server_name)


def make_client(endpoint: Endpoint, deadline_s: float) -> PredictionClient:
    """A PredictionClient for `endpoint`; a bad TLS file or address is a VerifyError line."""
    try:
        return PredictionClient(endpoint.address, tls=endpoint.tls(), deadline=deadline_s)
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot set up the client for {endpoint.address}: {exc}") from None


def verify_served(endpoint: Endpoint, wanted: ServedModel, golden: Golden, tol: Tolerance, *,
                  deadline_s: float = 30.0, batch_size: int = 1) -> dict[str, Any]:
    """Run the golden set against the served model; return the JSON report (never raises on mismatch).

    An endpoint list (`a:1,b:2`) is verified address by address — a balanced channel could
    leave one replica unasked — and passes only if every address does."""
    try:
        addresses = split_endpoints(endpoint.address)
    except ValueError as exc:
        raise VerifyError(f"verify: {exc}") from None
    if len(addresses) > 1:
        reports = [verify_one(replace(endpoint, address=a), wanted, golden, tol, deadline_s=deadline_s,
                              batch_size=batch_size) for a in addresses]
        return merge_reports(endpoint.address, reports)
    return verify_one(endpoint, wanted, golden, tol, deadline_s=deadline_s, batch_size=batch_size)


def merge_reports(address: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for an endpoint list (pure): the first failing address's verdict (else the worst
    difference), versions and request counts over all, each address's report under `endpoints`."""
    failed = [r for r in reports if not r["ok"]]
    head = failed[0] if failed else max(reports, key=lambda r: r["max_abs_diff"])
    merged = {**head, "ok": not failed, "endpoint": address,
              "served_versions": sorted({v for r in reports for v in r["served_versions"]}),
              "requests": sum(r["requests"] for r in reports),
              "agreement": min(r["agreement"] for r in reports),
              "endpoints": {r["endpoint"]: {k: r[k] for k in ("ok", "reason", "max_abs_diff", "served_versions",
                                                                "requests", "latency_ms")} for r in reports}}
    if failed:
        merged["reason"] = f"{head['endpoint']}: {head['reason']}"
    return merged


def verify_one(endpoint: Endpoint, wanted: ServedModel, golden: Golden, tol: Tolerance, *,
               deadline_s: float, batch_size: int) -> dict[str, Any]:
    """The golden set against one address (or one balanced `dns:///` channel)."""
    with make_client(endpoint, deadline_s) as client:
        try:
            client.wait_until_available(wanted.model, version=wanted.version, label=wanted.label,
                                        deadline=deadline_s)
            client.signature(wanted.model, wanted.signature, version=wanted.version, label=wanted.label)
            served: dict[str, list[np.ndarray]] = {}
            latencies: list[float] = []
            versions: set[int] = set()
            for _, batch in golden.batches(batch_size):
                start = time.perf_counter()
                result = client.predict_detailed(wanted.model, batch, version=wanted.version,
                                                 label=wanted.label, signature=wanted.signature)
                latencies.append(time.perf_counter() - start)
                if result.version is not None:
                    versions.add(result.version)
                for name, value in result.outputs.items():
                    served.setdefault(name, []).append(value)
        except (ClientError, CodecError) as exc:
            raise VerifyError(f"verify {wanted.describe()} at {endpoint.address}: {exc}") from None

    outputs = {name: np.concatenate(parts) for name, parts in served.items()}
    verdict = compare(outputs, golden.outputs, tol)
    worst = verdict.worst
    return {
        "ok": verdict.ok,
        "reason": verdict.reason(),
        "endpoint": endpoint.address,
        "model": wanted.model,
        "version": wanted.version,
        "label": wanted.label,
        "served_versions": sorted(versions),
        "golden": str(golden.path),
        "examples": golden.examples,
        "requests": len(latencies),
        "batch_size": batch_size,
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol, "min_agreement": tol.min_agreement},
        "max_abs_diff": verdict.max_abs_diff,
        "agreement": verdict.agreement,
        "worst": None if worst is None else {"output": worst.name, "index": worst.worst_index,
                                             "served": worst.worst_served,
                                             "expected": worst.worst_expected},
        "latency_ms": percentiles_ms(latencies),
        "outputs": {name: o.to_json() for name, o in verdict.outputs.items()},
    }
