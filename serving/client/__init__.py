"""A light TF Serving gRPC client: numpy in, numpy out, no TensorFlow import."""

from serving.client.client import Prediction, PredictionClient, model_spec
from serving.client.codec import CodecError, decode, encode
from serving.client.errors import (
    ClientError,
    DeadlineError,
    InputMismatchError,
    ModelNotFoundError,
    RequestFailedError,
    TargetUnavailableError,
    TLSHandshakeError,
)
from serving.client.loadgen import LoadReport, percentiles_ms, predict_many, run_load
from serving.client.retry import RetryPolicy
from serving.client.signature import SignatureInfo, TensorSpec
from serving.client.tls import TLSConfig

__all__ = [
    "ClientError", "CodecError", "DeadlineError", "InputMismatchError", "LoadReport",
    "ModelNotFoundError", "Prediction", "PredictionClient", "RequestFailedError", "RetryPolicy",
    "SignatureInfo", "TLSConfig", "TLSHandshakeError", "TargetUnavailableError", "TensorSpec",
    "decode", "encode", "model_spec", "percentiles_ms", "predict_many", "run_load",
]
