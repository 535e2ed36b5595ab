"""gRPC PredictionService and ModelService on the official generated servicer
bases, so method names, messages and status codes are TF Serving's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from . import wire
from .admin import ReloadGuard
from .errors import ServingError, invalid_argument
from .inference import InferenceRunner
from .limits import ByteBudget, Ticket
from .manager import ModelManager
from .metrics import Metrics, api_label
from .predict import Predictor, spec_target
from .wire import WirePredict

log = logging.getLogger("modelserver.grpc")


def _abort(context: grpc.ServicerContext, err: ServingError):
    context.abort(err.code, err.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress, MultiInference and GetModelMetadata."""

    def __init__(self, predictor: Predictor, metrics: Metrics | None = None):
        self._predictor = predictor
        self._metrics = metrics
        self._inference = InferenceRunner(predictor)

    def _observe(self, model: str, api: str, status: str, start: float) -> None:
        """request_count and request_latency as prediction_service_impl.cc records them
        (Predict, Classify and Regress only)."""
        if self._metrics and api in ("Predict", "Classify", "Regress"):
            self._metrics.observe_request(model, api, "GRPC", status, time.perf_counter() - start)

    def Predict(self, request: WirePredict, context):
        """`request` comes from wire.read_predict (see `add_to_server`), not protobuf."""
        start = time.perf_counter()
        status = "OK"
        try:
            with api_label("Predict"):
                return self._predictor.predict_request(request.message(), decode=request.decode,
                                                       charge=request.charge)
        except ServingError as err:
            status = err.code.name
            _abort(context, err)
        finally:
            request.release()
            self._observe(request.model_name, "Predict", status, start)

    def GetModelMetadata(self, request, context):
        try:
            return model_metadata(self._predictor.manager, request)
        except ServingError as err:
            _abort(context, err)

    def _infer(self, request: ChargedRequest, context, api: str, run: Callable):
        """One Classify/Regress/MultiInference call; the request's bytes stay charged
        to the in-flight budget until it is answered."""
        start = time.perf_counter()
        status = "OK"
        try:
            message = request.message()
            ticket = request.ticket
            with api_label(api):
                return run(message, ticket.grow if ticket is not None else None)
        except ServingError as err:
            status = err.code.name
            _abort(context, err)
        finally:
            request.release()
            self._observe(request.model_name, api, status, start)

    def Classify(self, request, context):
        return self._infer(request, context, "Classify", self._inference.classify)

    def Regress(self, request, context):
        return self._infer(request, context, "Regress", self._inference.regress)

    def MultiInference(self, request, context):
        return self._infer(request, context, "MultiInference", self._inference.multi_inference)

    def add_to_server(self, server: grpc.Server, limit: int | None, budget: ByteBudget | None) -> None:
        """Register the service; Predict reads requests with the zero-copy, size-checked
        reader, the example-based methods charge their bytes to the budget before parsing."""
        predict = grpc.unary_unary_rpc_method_handler(
            self.Predict, request_deserializer=wire.deserializer(limit, budget),
            response_serializer=predict_pb2.PredictResponse.SerializeToString)
        handlers = {"Predict": predict}
        for method, (req_cls, resp_cls) in INFERENCE_METHODS.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                getattr(self, method), request_deserializer=charged_reader(req_cls, budget),
                response_serializer=resp_cls.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", handlers),))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, server)


INFERENCE_METHODS = {
    "Classify": (classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse),
    "Regress": (regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
    "MultiInference": (inference_pb2.MultiInferenceRequest, inference_pb2.MultiInferenceResponse),
}
# Parsing a message and holding its Example protos takes about this many times its size
PARSE_FACTOR = 3


class ChargedRequest:
    """A parsed request with the budget bytes it holds (or the error to answer with)."""

    def __init__(self, request=None, ticket: Ticket | None = None, error: ServingError | None = None):
        self.request = request
        self.ticket = ticket
        self.error = error

    @property
    def model_name(self) -> str:
        if self.request is None:
            return ""
        if isinstance(self.request, inference_pb2.MultiInferenceRequest):
            return self.request.tasks[0].model_spec.name if self.request.tasks else ""
        return self.request.model_spec.name

    def message(self):
        if self.error is not None:
            raise self.error
        return self.request

    def release(self) -> None:
        if self.ticket is not None:
            self.ticket.release()


def charged_reader(message_cls, budget: ByteBudget | None) -> Callable[[bytes], ChargedRequest]:
    """request_deserializer: admit PARSE_FACTOR × the message to the budget, then parse.
    Errors are handed to the handler (a raising deserializer would log a traceback)."""
    def read(raw: bytes) -> ChargedRequest:
        ticket = None
        try:
            if budget is not None:
                ticket = budget.admit(PARSE_FACTOR * len(raw))
            return ChargedRequest(message_cls.FromString(raw), ticket)
        except ServingError as err:
            return ChargedRequest(error=err)
        except DecodeError as exc:
            if ticket is not None:
                ticket.release()
            return ChargedRequest(error=invalid_argument(
                f"Could not parse {message_cls.DESCRIPTOR.name}: {exc}"))
    return read


class BudgetGate(grpc.ServerInterceptor):
    """Refuses a Predict (or Classify, Regress, MultiInference) before its message is read while the in-flight budget is full."""

    def __init__(self, budget: ByteBudget):
        self._budget = budget

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method in BUDGETED_METHODS and self._budget.full():
            return _REFUSE_FULL
        return continuation(handler_call_details)


PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
BUDGETED_METHODS = frozenset([PREDICT_METHOD] + [
    f"/tensorflow.serving.PredictionService/{m}" for m in ("Classify", "Regress", "MultiInference")])


def _refuse_full(_request_iterator, context):
    # a stream handler: gRPC does not read the request message before calling it
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "In-flight request bytes are at --max_inflight_request_bytes; retry later")


_REFUSE_FULL = grpc.stream_unary_rpc_method_handler(_refuse_full)


def model_metadata(manager: ModelManager, request) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata: only the `signature_def` field exists, as in TF Serving."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != "signature_def":
            raise invalid_argument(f"Metadata field {field} is not supported")
    version, label = spec_target(request.model_spec)
    servable = manager.resolve(request.model_spec.name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = servable.version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    return response


def model_status(manager: ModelManager, request) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus rows with each version's state and (error) status."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    # only `version` narrows the answer: a version_label is ignored (get_model_status_impl.cc)
    version, _ = spec_target(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, error in manager.status(request.model_spec.name, version):
        row = response.model_version_status.add(version=v, state=int(state))
        row.status.SetInParent()  # TF Serving always reports a status (OK when no error)
        if error is not None:
            row.status.error_code = error.code_number
            row.status.error_message = error.message
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest (replaces the whole model set)."""

    def __init__(self, manager: ModelManager, on_reload: Callable[[object], None] | None = None,
                 guard: ReloadGuard | None = None):
        self._manager = manager
        self._on_reload = on_reload
        self._guard = guard  # validates the whole config (roots included) before any change

    def GetModelStatus(self, request, context):
        try:
            return model_status(self._manager, request)
        except ServingError as err:
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if self._guard is not None:
                self._guard.check(request.config)
            self._manager.apply_config(request.config)
            if self._on_reload:
                self._on_reload(request.config)
        except ServingError as err:
            log.error("ReloadConfig failed: %s", err.message)
            response.status.error_code = err.code_number
            response.status.error_message = err.message
            _abort(context, err)
        return response
