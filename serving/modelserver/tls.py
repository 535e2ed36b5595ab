"""--ssl_config_file → gRPC server credentials, as TF Serving builds them: the SSLConfig's
PEM key and certificate; `custom_ca` as the roots client certificates are checked
against; `client_verify: true` requires and verifies a client certificate (mutual TLS),
otherwise none is requested. The same credentials secure every gRPC listener (TCP and
--grpc_socket_path); the REST port is not affected (TF Serving's HTTP server has no TLS)."""

from __future__ import annotations

import grpc

from serving import tfs_config
from serving.tfs_config import ConfigFileError


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """Credentials from an SSLConfig message."""
    if not ssl_config.server_key or not ssl_config.server_cert:
        raise ConfigFileError("INVALID_ARGUMENT: Failed to BuildAndStart gRPC server")
    try:
        return grpc.ssl_server_credentials(
            [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
            root_certificates=ssl_config.custom_ca.encode() or None,
            require_client_auth=ssl_config.client_verify)
    except (ValueError, TypeError) as exc:
        raise ConfigFileError(f"INVALID_ARGUMENT: Failed to BuildAndStart gRPC server ({exc})") from None


def read_credentials(path: str) -> grpc.ServerCredentials | None:
    """Credentials for --ssl_config_file (None when unset: plaintext, as in TF Serving)."""
    if not path:
        return None
    return server_credentials(tfs_config.read_ssl_config(path))
