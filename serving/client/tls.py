"""TLS settings for the channel: server CA, optional client certificate (mutual TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TLSConfig:
    """Paths to PEM files; `server_name` overrides the name checked in the server cert."""

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> Any:
        import grpc

        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs both client_cert and client_key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _read(path: Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()
