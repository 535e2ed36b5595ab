"""One error type carrying a gRPC status code, so every layer (validation, model
manager, batching) reports the same code to gRPC and the same mapped HTTP status to REST."""

from __future__ import annotations

import grpc

# HTTP status for each canonical code, as TF Serving's REST layer maps them.
_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# Numeric value of each code (same numbering as tensorflow.error.Code / google.rpc.Code).
CODE_NUMBER = {code: code.value[0] for code in grpc.StatusCode}
CODE_BY_NUMBER = {num: code for code, num in CODE_NUMBER.items()}


class ServingError(Exception):
    """A request or load failure with its canonical status code."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status  # REST only: a more precise status than the code's

    @property
    def http_status(self) -> int:
        return self._http_status or _HTTP.get(self.code, 500)

    @property
    def code_number(self) -> int:
        return CODE_NUMBER[self.code]

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def deadline_exceeded() -> ServingError:
    """A run outlived its timeout: TF's DirectSession reports an expired
    RunOptions.timeout_in_ms with exactly this code and text (REST: 504)."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification")


def from_tf_error(exc: Exception) -> ServingError:
    """Map a tf.errors.OpError (raised while running a signature) to its code."""
    number = getattr(exc, "error_code", None)
    code = CODE_BY_NUMBER.get(number, grpc.StatusCode.INTERNAL) if number else grpc.StatusCode.INTERNAL
    message = getattr(exc, "message", None) or str(exc)
    return ServingError(code, message)


class StartupError(Exception):
    """The first config could not be served: the server must not start (TF Serving's
    `Failed to start server. Error: <status>` and exit code 255)."""
