"""A light TF Serving gRPC client: numpy in, numpy out, no TensorFlow import.

Names are imported on first use, so a pure submodule (e.g. `serving.client.availability`,
used by the rollout machine) can be imported without loading grpc and numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "serving.client.client": ("Prediction", "PredictionClient", "model_spec"),
    "serving.client.codec": ("CodecError", "decode", "encode"),
    "serving.client.errors": ("ClientError", "DeadlineError", "InputMismatchError", "LoadFailedError",
                              "ModelNotFoundError", "RequestFailedError", "TargetUnavailableError",
                              "TLSHandshakeError"),
    "serving.client.availability": ("Availability", "assess"),
    "serving.client.loadgen": ("LoadReport", "percentiles_ms", "predict_many", "run_load"),
    "serving.client.retry": ("RetryPolicy",),
    "serving.client.signature": ("SignatureInfo", "TensorSpec"),
    "serving.client.tls": ("TLSConfig",),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "Availability", "ClientError", "CodecError", "DeadlineError", "InputMismatchError", "LoadFailedError",
    "LoadReport", "ModelNotFoundError", "Prediction", "PredictionClient", "RequestFailedError",
    "RetryPolicy", "SignatureInfo", "TLSConfig", "TLSHandshakeError", "TargetUnavailableError",
    "TensorSpec", "assess", "decode", "encode", "model_spec", "percentiles_ms", "predict_many",
    "run_load",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from serving.client.availability import Availability, assess
    from serving.client.client import Prediction, PredictionClient, model_spec
    from serving.client.codec import CodecError, decode, encode
    from serving.client.errors import (
        ClientError,
        DeadlineError,
        InputMismatchError,
        LoadFailedError,
        ModelNotFoundError,
        RequestFailedError,
        TargetUnavailableError,
        TLSHandshakeError,
    )
    from serving.client.loadgen import LoadReport, percentiles_ms, predict_many, run_load
    from serving.client.retry import RetryPolicy
    from serving.client.signature import SignatureInfo, TensorSpec
    from serving.client.tls import TLSConfig
