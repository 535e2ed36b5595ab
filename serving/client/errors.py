"""Client errors: one readable line each, with the gRPC status code kept for callers.

`serving.client` must not import `pipeline`, so these are plain exceptions; the
pipeline maps them onto its own error types at its edge.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class; `code` is the gRPC status name (e.g. "UNAVAILABLE") when one applies.

    `details` is the server's own message (or what the client saw) without this
    client's wording, so callers can phrase the error in their own terms.
    """

    def __init__(self, message: str, code: str | None = None, details: str = "") -> None:
        super().__init__(" ".join(message.split()))  # always a single line
        self.code = code
        self.details = " ".join(details.split())


class TargetUnavailableError(ClientError):
    """Nothing answers at the target (refused, wrong port, server down)."""


class TLSHandshakeError(ClientError):
    """The connection was made but TLS failed (plain vs TLS, wrong CA, bad client cert)."""


class ModelNotFoundError(ClientError):
    """The server does not serve this model, version, label or signature."""


class InputMismatchError(ClientError):
    """The request's inputs do not match the served signature (checked before sending)."""


class LoadFailedError(ClientError):
    """The version failed to load on the server (state END with an error): waiting cannot help."""


class DeadlineError(ClientError):
    """The call (including retries) did not finish within its deadline."""


class RequestFailedError(ClientError):
    """Any other failed RPC (invalid argument, internal error, ...)."""
