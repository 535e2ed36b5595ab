"""A light TF Serving gRPC client: numpy in, numpy out, no TensorFlow import."""

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

__all__ = [
    "ClientError", "CodecError", "DeadlineError", "InputMismatchError", "ModelNotFoundError",
    "RequestFailedError", "TLSHandshakeError", "TargetUnavailableError", "decode", "encode",
]
