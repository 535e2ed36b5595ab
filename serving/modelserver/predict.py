"""The predict path shared by gRPC, REST and warmup: resolve the servable,
validate inputs against the signature, run (directly or through the batcher)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from typing import TypeVar

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from .batching import BatchOptions, BatchScheduler
from .errors import ServingError, deadline_exceeded, invalid_argument
from .inflight import from_environment, request_meta
from .limits import Charge
from .manager import ModelManager
from .runmem import RunPlanner
from .servable import DEFAULT_SIGNATURE, Servable
from .tensors import SignatureSpec, decode_inputs, fill_proto, select_outputs

T = TypeVar("T")

SERVING_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify",
                   "tensorflow/serving/regress")


def call_with_timeout(fn: Callable[[], T], timeout: float) -> T:
    """`fn()` on its own thread, waited for at most `timeout` seconds, else DEADLINE_EXCEEDED.

    A running TF signature cannot be interrupted: on expiry the caller is answered
    at once and the run finishes in the background, its result dropped."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="timed-run", daemon=True).start()
    done, _ = wait([future], timeout)
    if not done:
        raise deadline_exceeded()
    return future.result()


def spec_target(model_spec) -> tuple[int | None, str | None]:
    """(version, label) from a ModelSpec's version_choice oneof."""
    which = model_spec.WhichOneof("version_choice")
    if which == "version":
        return int(model_spec.version.value), None
    if which == "version_label":
        return None, model_spec.version_label
    return None, None


class Predictor:
    """Runs predictions for the servers; owns the batching decision."""

    def __init__(self, manager: ModelManager, batch_options: BatchOptions | None = None,
                 on_batch: Callable[[int], None] | None = None, max_request_bytes: int | None = None,
                 tensor_content: bool = False, check_method_name: bool = False,
                 max_run_bytes: int | None = None):
        self.manager = manager
        # --max_run_bytes: one session run's tensors (a larger request runs in parts)
        self.planner = RunPlanner(max_run_bytes, max_request_bytes)
        self.inflight = from_environment()  # TFROLLOUT_INFLIGHT_FILE: metadata of running requests
        self.tensor_content = tensor_content  # --enable_serialization_as_tensor_content
        self.check_method_name = check_method_name  # --enable_signature_method_name_check
        self.max_request_bytes = max_request_bytes  # declared bytes of one input (None: no cap)
        self.batch_options = batch_options
        self.on_batch = on_batch

    def run(self, servable: Servable, spec: SignatureSpec, arrays: Mapping[str, np.ndarray],
            aliases: Sequence[str], timeout: float | None = None,
            charge: Charge | None = None) -> dict[str, np.ndarray]:
        """Run one validated request on a servable (batched when enabled).

        `timeout` (seconds, None: none) bounds the run, queueing for a batch included,
        like RunOptions.timeout_in_ms in TF Serving. `charge` adds the run's measured
        cost to the request's in-flight bytes before it runs (RESOURCE_EXHAUSTED if full)."""
        record = self.inflight
        if record is None:
            return self._run(servable, spec, arrays, aliases, timeout, charge)
        slot = record.begin(request_meta(servable.name, servable.version, spec.key, arrays))
        try:
            return self._run(servable, spec, arrays, aliases, timeout, charge)
        finally:
            record.end(slot)

    def _run(self, servable: Servable, spec: SignatureSpec, arrays: Mapping[str, np.ndarray],
             aliases: Sequence[str], timeout: float | None, charge: Charge | None) -> dict[str, np.ndarray]:
        options = self.batch_options
        planner = self.planner
        if options is None:
            if timeout is None:
                return planner.run(servable, spec.key, arrays, aliases, charge)
            return call_with_timeout(lambda: planner.run(servable, spec.key, arrays, aliases, charge), timeout)
        scheduler = servable.extra(
            f"batch:{spec.key}",
            lambda: BatchScheduler(lambda a: planner.run(servable, spec.key, a), options, self.on_batch))
        out = scheduler.submit(arrays, timeout)
        return {k: out[k] for k in aliases}

    def signature(self, servable: Servable, signature_name: str) -> SignatureSpec:
        """The signature's spec; with --enable_signature_method_name_check, only
        predict/classify/regress signatures (TF Serving's INTERNAL error otherwise)."""
        spec = servable.spec(signature_name)
        if self.check_method_name and spec.method_name not in SERVING_METHODS:
            raise ServingError(grpc.StatusCode.INTERNAL,
                               "Expected prediction signature method_name to be one of "
                               f"{{{', '.join(SERVING_METHODS)}}}. Was: {spec.method_name}")
        return spec

    def predict(self, name: str, version: int | None, label: str | None, signature_name: str,
                decode: Callable[[SignatureSpec], dict[str, np.ndarray]],
                output_filter: Sequence[str] = (), timeout: float | None = None,
                charge: Charge | None = None,
                ) -> tuple[Servable, SignatureSpec, dict[str, np.ndarray]]:
        """Resolve, validate (`decode` turns the request's inputs into checked arrays), run
        (within `timeout` seconds when given; its cost charged by `charge`)."""
        servable = self.manager.resolve(name, version, label)
        spec = self.signature(servable, signature_name)
        arrays = decode(spec)
        aliases = select_outputs(spec, output_filter)
        return servable, spec, self.run(servable, spec, arrays, aliases, timeout, charge)

    def predict_request(self, request: predict_pb2.PredictRequest,
                        servable: Servable | None = None,
                        decode: Callable[[SignatureSpec], dict[str, np.ndarray]] | None = None,
                        charge: Charge | None = None,
                        ) -> predict_pb2.PredictResponse:
        """A PredictRequest end to end; `servable` given → skip resolution (warmup).

        `decode` turns the inputs into checked arrays (the gRPC path passes its
        zero-copy reader's); by default the request's TensorProtos are decoded. `charge`
        takes the run's cost into the request's in-flight bytes."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        ms = request.model_spec
        if decode is None:
            def decode(s: SignatureSpec) -> dict[str, np.ndarray]:
                return decode_inputs(s, request.inputs, self.max_request_bytes)
        if servable is None:
            version, label = spec_target(ms)
            servable, spec, outputs = self.predict(
                ms.name, version, label, ms.signature_name, decode, list(request.output_filter),
                charge=charge)
        else:
            spec = self.signature(servable, ms.signature_name)
            arrays = decode(spec)
            aliases = select_outputs(spec, list(request.output_filter))
            outputs = self.run(servable, spec, arrays, aliases)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = ms.name or servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = ms.signature_name or DEFAULT_SIGNATURE
        for alias, arr in outputs.items():
            fill_proto(response.outputs[alias], arr, self.tensor_content)
        return response

    def warmup(self, servable: Servable, iterations: int = 1) -> int:
        """Replay the version's warmup PredictionLogs; any failure fails the load.

        The first record of each signature is also measured (runmem), so the version
        knows what a run costs before its first large request."""
        count = 0
        measured: set[str] = set()
        for record in servable.warmup_records():
            if record.WhichOneof("log_type") != "predict_log":
                continue  # only Predict is served here
            request = record.predict_log.request
            for _ in range(max(1, iterations)):
                self.predict_request(request, servable=servable)
            count += 1
            key = request.model_spec.signature_name or DEFAULT_SIGNATURE
            if key not in measured and self.planner.max_run_bytes and servable.measurable:
                measured.add(key)
                self._measure(servable, request)
        return count

    def _measure(self, servable: Servable, request: predict_pb2.PredictRequest) -> None:
        """One traced run of a (warmup) request; it already ran, so it cannot fail here."""
        try:
            spec = self.signature(servable, request.model_spec.signature_name)
            arrays = decode_inputs(spec, request.inputs, self.max_request_bytes)
            self.planner.measure(servable, spec.key, arrays, select_outputs(spec, list(request.output_filter)))
        except ServingError:  # measured on the first large request instead
            pass
