"""The edge of verify: send the golden inputs to the served model, time each call, compare.

Client errors (unreachable, TLS, unknown model/label, signature mismatch) become
`VerifyError` lines here, so the CLI shows them as one line with exit code 8.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import VerifyError
from pipeline.verify.compare import Tolerance, compare
from pipeline.verify.golden import Golden


@dataclass(frozen=True)
class Target:
    """Where and what to ask: address, model, version or label, TLS files."""

    address: str
    model: str
    version: int | None = None
    label: str | None = None
    signature: str = "serving_default"
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    def describe(self) -> str:
        which = f" version {self.version}" if self.version is not None else (
            f" label {self.label!r}" if self.label else "")
        return f"{self.model!r}{which} at {self.address}"


def make_client(target: Target, deadline_s: float) -> Any:
    """A PredictionClient for `target` (TLS when a CA or client certificate is given)."""
    from serving.client import PredictionClient, TLSConfig

    tls = None
    if target.ca_cert or target.client_cert:
        tls = TLSConfig(target.ca_cert, target.client_cert, target.client_key, target.server_name)
    try:
        return PredictionClient(target.address, tls=tls, deadline=deadline_s)
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot set up the client for {target.address}: {exc}") from None


def client_errors() -> tuple[type[Exception], ...]:
    from serving.client import ClientError, CodecError

    return (ClientError, CodecError)


def verify_served(target: Target, golden: Golden, tol: Tolerance, *, deadline_s: float = 30.0,
                  batch_size: int = 1) -> dict[str, Any]:
    """Run the golden set against the served model; return the JSON report (never raises on mismatch)."""
    with make_client(target, deadline_s) as client:
        try:
            client.wait_until_available(target.model, version=target.version, label=target.label,
                                        deadline=deadline_s)
            client.signature(target.model, target.signature, version=target.version, label=target.label)
            served: dict[str, list[np.ndarray]] = {}
            latencies: list[float] = []
            versions: set[int] = set()
            for _, batch in golden.batches(batch_size):
                start = time.perf_counter()
                result = client.predict_detailed(target.model, batch, version=target.version,
                                                 label=target.label, signature=target.signature)
                latencies.append(time.perf_counter() - start)
                if result.version is not None:
                    versions.add(result.version)
                for name, value in result.outputs.items():
                    served.setdefault(name, []).append(value)
        except client_errors() as exc:
            raise VerifyError(f"verify {target.describe()}: {exc}") from None
    from serving.client import percentiles_ms

    outputs = {name: np.concatenate(parts) for name, parts in served.items()}
    verdict = compare(outputs, golden.outputs, tol)
    worst = verdict.worst
    return {
        "ok": verdict.ok,
        "reason": verdict.reason(),
        "target": target.address,
        "model": target.model,
        "version": target.version,
        "label": target.label,
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
