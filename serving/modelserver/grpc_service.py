"""gRPC PredictionService and ModelService on the official generated servicer
bases, so method names, messages and status codes are TF Serving's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from . import wire
from .admin import ReloadGuard
from .errors import ServingError, invalid_argument
from .limits import ByteBudget
from .manager import ModelManager
from .metrics import Metrics
from .predict import Predictor, spec_target
from .wire import WirePredict

log = logging.getLogger("modelserver.grpc")


def _abort(context: grpc.ServicerContext, err: ServingError):
    context.abort(err.code, err.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference are UNIMPLEMENTED."""

    def __init__(self, predictor: Predictor, metrics: Metrics | None = None):
        self._predictor = predictor
        self._metrics = metrics

    def Predict(self, request: WirePredict, context):
        """`request` comes from wire.read_predict (see `add_to_server`), not protobuf."""
        start = time.perf_counter()
        status = "OK"
        try:
            return self._predictor.predict_request(request.message(), decode=request.decode)
        except ServingError as err:
            status = err.code.name
            _abort(context, err)
        finally:
            request.release()
            if self._metrics:
                self._metrics.observe_request(request.model_name, "predict", "GRPC", status,
                                              time.perf_counter() - start)

    def GetModelMetadata(self, request, context):
        try:
            return model_metadata(self._predictor.manager, request)
        except ServingError as err:
            _abort(context, err)

    # answered explicitly: the generated base raises NotImplementedError, which gRPC
    # logs as a traceback for every call
    def Classify(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not supported by this server")

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported by this server")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported by this server")

    def add_to_server(self, server: grpc.Server, limit: int | None, budget: ByteBudget | None) -> None:
        """Register the service; Predict reads requests with the zero-copy, size-checked reader."""
        predict = grpc.unary_unary_rpc_method_handler(
            self.Predict, request_deserializer=wire.deserializer(limit, budget),
            response_serializer=predict_pb2.PredictResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", {"Predict": predict}),))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self, server)


class BudgetGate(grpc.ServerInterceptor):
    """Refuses a Predict before its message is read while the in-flight budget is full."""

    def __init__(self, budget: ByteBudget):
        self._budget = budget

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == PREDICT_METHOD and self._budget.full():
            return _REFUSE_FULL
        return continuation(handler_call_details)


PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"


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
    version, label = spec_target(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, error in manager.status(request.model_spec.name, version, label):
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
