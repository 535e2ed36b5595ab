"""PredictionClient: Predict / GetModelMetadata / GetModelStatus / HandleReloadConfigRequest
over one reused channel.

The RPCs are called by their real TF Serving method paths with this project's
own message classes, so no stub from tensorflow-serving-api (and therefore no
TensorFlow) is needed. Every failure becomes one `ClientError` line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from serving.client import codec
from serving.client._generated import tfrollout_wire_pb2 as wire
from serving.client.availability import assess
from serving.client.endpoints import channel_target
from serving.client.errors import (
    ClientError,
    DeadlineError,
    LoadFailedError,
    ModelNotFoundError,
    RequestFailedError,
    TargetUnavailableError,
    TLSHandshakeError,
)
from serving.client.fastwire import FastPredictResponse
from serving.client.retry import RetryPolicy
from serving.client.signature import SignatureInfo, check_inputs, parse_metadata, pick
from serving.client.tls import TLSConfig

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
MAX_MESSAGE_BYTES = 1 << 30  # one (64,224,224,3) float32 batch is 38 MB; gRPC's default is 4 MB
_TLS_HINTS = ("ssl", "tls", "handshake", "certificate", "wrong_version_number")
# tensorflow.error.Code numbers are the gRPC status numbers (0 OK ... 16 UNAUTHENTICATED)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass(frozen=True)
class Prediction:
    """Decoded outputs plus which servable answered (the server fills model_spec)."""

    outputs: dict[str, np.ndarray]
    model: str
    version: int | None


def _describe(model: str, version: int | None, label: str | None) -> str:
    if version is not None:
        return f"model {model!r} version {version}"
    if label is not None:
        return f"model {model!r} label {label!r}"
    return f"model {model!r}"


def model_spec(model: str, version: int | None = None, label: str | None = None,
               signature: str | None = None) -> wire.ModelSpec:
    """A ModelSpec addressing a version or a label (not both)."""
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    spec = wire.ModelSpec(name=model)
    if version is not None:
        spec.version.value = int(version)
    elif label is not None:
        spec.version_label = label
    if signature:
        spec.signature_name = signature
    return spec


class PredictionClient:
    """A thread-safe client for a TF Serving target: `host:port`, or several (`a:1,b:2`, or
    `dns:///name:port`) balanced round_robin (`serving.client.endpoints`).

    `deadline` is the total time budget of one call, retries included.
    `retries` is a RetryPolicy or a number of attempts.
    """

    def __init__(self, target: str, *, tls: TLSConfig | None = None, deadline: float = 10.0,
                 retries: RetryPolicy | int = 3, check_signature: bool = True,
                 options: list[tuple[str, Any]] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 admin_token: str | None = None) -> None:
        self.target = target
        # ModelService calls (status, reload_config) carry it when the server was started
        # with --admin_token_file; Predict and metadata never send it
        self._admin_metadata = (("authorization", f"Bearer {admin_token}"),) if admin_token else None
        self.tls = tls
        self.deadline = deadline
        self.retry = retries if isinstance(retries, RetryPolicy) else RetryPolicy(attempts=max(1, retries))
        self.check_signature = check_signature
        self._sleep = sleep
        channel_to, balancing = channel_target(target)
        opts = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), *balancing, *(options or [])]
        if tls is not None:
            if balancing and channel_to.startswith("ipv") and not tls.server_name:
                raise ValueError(f"TLS over an endpoint list ({target}) needs a server name to check "
                                 "the replicas' certificate against (verify.server_name)")
            opts += tls.channel_options()
            self._channel = grpc.secure_channel(channel_to, tls.credentials(), options=opts)
        else:
            self._channel = grpc.insecure_channel(channel_to, options=opts)
        self._predict = self._method(PREDICT, FastPredictResponse)  # zero-copy outputs
        self._metadata = self._method(METADATA, wire.MetadataResponse)
        self._status = self._method(STATUS, wire.StatusResponse)
        self._reload = self._method(RELOAD, wire.ReloadConfigResponse)
        self._signatures: dict[tuple[Any, ...], SignatureInfo] = {}
        self._lock = threading.Lock()

    def _method(self, path: str, response: Any) -> grpc.UnaryUnaryMultiCallable:
        return self._channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=response.FromString)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ready(self, timeout_s: float) -> bool:
        """True once the target accepts a connection (its port answers); makes no RPC.

        For "is the runtime up yet" loops: cheaper than an RPC and independent of
        which models are loaded.
        """
        future = grpc.channel_ready_future(self._channel)
        try:
            future.result(timeout=max(timeout_s, 0.0))
            return True
        except grpc.FutureTimeoutError:
            future.cancel()  # stop watching the channel; the next call starts afresh
            return False

    def _call(self, method: grpc.UnaryUnaryMultiCallable, request: Any, *, idempotent: bool,
              what: str, deadline: float | None = None, addresses_model: bool = True,
              admin: bool = False) -> Any:
        budget = self.deadline if deadline is None else deadline
        end = time.monotonic() + budget
        delays = self.retry.delays()
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise DeadlineError(f"{what} on {self.target}: no answer within {budget:g} s",
                                    "DEADLINE_EXCEEDED", f"no answer within {budget:g} s")
            try:
                if admin and self._admin_metadata:
                    return method(request, timeout=remaining, metadata=self._admin_metadata)
                return method(request, timeout=remaining)
            except grpc.RpcError as err:
                code = err.code().name if err.code() else "UNKNOWN"
                delay = next(delays, None) if self.retry.should_retry(code, idempotent=idempotent) else None
                if delay is None or time.monotonic() + delay >= end:
                    raise self._translate(err, what, budget, addresses_model) from None
                self._sleep(delay)

    def _translate(self, err: grpc.RpcError, what: str, budget: float,
                   addresses_model: bool = True) -> ClientError:
        """One ClientError for a failed RPC; NOT_FOUND means "no such model" only for
        RPCs that address a servable (a refused reload is a RequestFailedError)."""
        code = err.code().name if err.code() else "UNKNOWN"
        details = " ".join((err.details() or "").split())
        lowered = details.lower()
        if code == "UNAVAILABLE" and any(h in lowered for h in _TLS_HINTS):
            return TLSHandshakeError(f"TLS handshake with {self.target} failed: {details}", code, details)
        if code == "UNAVAILABLE":
            hint = " (is the server using TLS?)" if self.tls is None and "socket closed" in lowered else ""
            return TargetUnavailableError(f"cannot reach {self.target}{hint}: {details}", code, details)
        if code == "DEADLINE_EXCEEDED":
            return DeadlineError(f"{what} on {self.target}: no answer within {budget:g} s", code,
                                 details or f"no answer within {budget:g} s")
        if code == "NOT_FOUND" and addresses_model:
            return ModelNotFoundError(f"{what}: not served by {self.target}: {details}", code, details)
        return RequestFailedError(f"{what} failed ({code}): {details}", code, details)

    # ------------------------------------------------------------------ RPCs

    def metadata(self, model: str, *, version: int | None = None, label: str | None = None,
                 deadline: float | None = None) -> dict[str, SignatureInfo]:
        """All signatures of the servable, from GetModelMetadata."""
        request = wire.MetadataRequest(model_spec=model_spec(model, version, label),
                                       metadata_field=["signature_def"])
        response = self._call(self._metadata, request, idempotent=True, deadline=deadline,
                              what=f"metadata of {_describe(model, version, label)}")
        return parse_metadata(response)

    def signature(self, model: str, signature: str = "serving_default", *,
                  version: int | None = None, label: str | None = None) -> SignatureInfo:
        """One signature, cached per servable (metadata is fetched once)."""
        key = (model, version, label, signature)
        with self._lock:
            cached = self._signatures.get(key)
        if cached is None:
            cached = pick(self.metadata(model, version=version, label=label), signature,
                          _describe(model, version, label))
            with self._lock:
                self._signatures[key] = cached
        return cached

    def status(self, model: str, *, version: int | None = None,
               deadline: float | None = None) -> dict[int, dict[str, Any]]:
        """`{version: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}`."""
        request = wire.StatusRequest(model_spec=model_spec(model, version))
        response = self._call(self._status, request, idempotent=True, deadline=deadline,
                              what=f"status of {_describe(model, version, None)}", admin=True)
        return {s.version: {"state": wire.VersionStatus.State.Name(s.state),
                            "error_code": s.status.error_code,
                            "error_message": s.status.error_message}
                for s in response.model_version_status}

    def reload_config(self, config: bytes, *, deadline: float | None = None) -> None:
        """HandleReloadConfigRequest: make the server serve exactly this ModelServerConfig.

        `config` is a serialized `tensorflow.serving.ModelServerConfig`
        (`SerializeToString()`): bytes, so this package needs no TF Serving protos. The
        call blocks until the server has loaded the new versions (or failed), so give a
        `deadline` long enough for a model load. A refusal, reported either as a gRPC
        error or as a non-zero `status` in the response (TF Serving sets both), raises
        RequestFailedError carrying the server's message in `details`.

        Retries: as for Predict, only UNAVAILABLE is retried (the client's rule for
        "the request did not get through"); a DEADLINE_EXCEEDED reload is not, since the
        server may still be applying it. Re-sending after a dropped connection is safe
        because the request carries the whole desired model set, not a change to it.
        """
        request = wire.ReloadConfigRequest(config=config)
        response = self._call(self._reload, request, idempotent=False, deadline=deadline,
                              what="config reload", addresses_model=False, admin=True)
        status = response.status
        if status.error_code:
            code = _CODE_NAMES.get(status.error_code, f"code {status.error_code}")
            raise RequestFailedError(f"config reload failed ({code}): {status.error_message}", code,
                                     status.error_message)

    def predict_detailed(self, model: str, inputs: Mapping[str, Any], *, version: int | None = None,
                         label: str | None = None, signature: str = "serving_default",
                         output_filter: list[str] | None = None,
                         check_signature: bool | None = None,
                         deadline: float | None = None) -> Prediction:
        """Predict and also report which version answered."""
        check = self.check_signature if check_signature is None else check_signature
        if check:
            sig = self._signature_or_none(model, signature, version, label)
            if sig is not None:
                check_inputs(sig, inputs)
        request = wire.PredictRequest(model_spec=model_spec(model, version, label, signature))
        codec.encode_map(dict(inputs), request.inputs)
        if output_filter:
            request.output_filter.extend(output_filter)
        response = self._call(self._predict, request, idempotent=False, deadline=deadline,
                              what=f"predict on {_describe(model, version, label)}")
        spec = response.model_spec
        served = spec.version.value if spec.HasField("version") else None
        return Prediction(response.outputs, spec.name or model, served)

    def predict(self, model: str, inputs: Mapping[str, Any], *, version: int | None = None,
                label: str | None = None, signature: str = "serving_default",
                output_filter: list[str] | None = None, check_signature: bool | None = None,
                deadline: float | None = None) -> dict[str, np.ndarray]:
        """Send `inputs` (name -> array) and return the outputs (name -> read-only array)."""
        return self.predict_detailed(model, inputs, version=version, label=label,
                                     signature=signature, output_filter=output_filter,
                                     check_signature=check_signature, deadline=deadline).outputs

    def _signature_or_none(self, model: str, signature: str, version: int | None,
                           label: str | None) -> SignatureInfo | None:
        try:
            return self.signature(model, signature, version=version, label=label)
        except RequestFailedError as err:
            if err.code == "UNIMPLEMENTED":  # a server without metadata: let Predict decide
                return None
            raise

    def wait_until_available(self, model: str, *, version: int | None = None,
                             label: str | None = None, deadline: float = 30.0,
                             poll_s: float = 0.1) -> int | None:
        """Block until the version (or label, or any version) serves; return the version.

        Labels are resolved through GetModelMetadata, which TF Serving answers only
        once the labelled version is loaded (None is returned); versions through
        GetModelStatus, judged by `availability.assess` (the rule the rollout machine
        uses too): a version that failed to load raises LoadFailedError at once.
        """
        what = _describe(model, version, label)
        end = time.monotonic() + deadline
        last = "no answer yet"
        status_allowed = True
        while True:
            budget = max(min(end - time.monotonic(), 5.0), 0.05)
            try:
                if label is not None or not status_allowed:
                    # metadata answers only once the label's / version's servable is loaded
                    self.metadata(model, version=version, label=label, deadline=budget)
                    return version if label is None else None
                rows = self.status(model, version=version, deadline=budget)
            except (TargetUnavailableError, ModelNotFoundError, DeadlineError) as err:
                last = str(err)
            except RequestFailedError as err:
                if err.code == "UNAUTHENTICATED" and status_allowed:
                    # ModelService is token-protected (--admin_token_file) and we hold no token:
                    # fall back to metadata, which stays open (a failed load then shows as a timeout)
                    status_allowed, last = False, str(err)
                    continue
                if err.code != "FAILED_PRECONDITION":
                    raise
                last = str(err)
            else:
                seen = assess({v: (s["state"], s["error_message"]) for v, s in rows.items()}, version)
                if seen.served is not None:
                    return seen.served
                if seen.error:
                    raise LoadFailedError(f"{what} failed to load on {self.target}: {seen.error}",
                                          None, seen.error)
                last = seen.detail
            if time.monotonic() + poll_s >= end:
                raise DeadlineError(f"{what} not available on {self.target} within {deadline:g} s: {last}",
                                    "DEADLINE_EXCEEDED", last)
            self._sleep(poll_s)
