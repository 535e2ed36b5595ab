"""TLS and mutual TLS, and the one-line errors when either side disagrees."""

from __future__ import annotations

import numpy as np
import pytest

from serving.client import (
    ClientError,
    PredictionClient,
    TargetUnavailableError,
    TLSConfig,
    TLSHandshakeError,
)
from tests.client.conftest import Certs, Served

X = {"inputs": np.zeros((1, 8, 8, 1), np.float32)}


def test_mutual_tls_predict(served_tls: Served, certs: Certs) -> None:
    tls = TLSConfig(ca_cert=certs.ca, client_cert=certs.client_cert, client_key=certs.client_key)
    with PredictionClient(served_tls.target, tls=tls, deadline=20) as client:
        assert client.predict(served_tls.model, X, version=1)["probabilities"].shape == (1, 5)


def test_server_signed_by_another_ca_is_a_tls_error(served_tls: Served, certs: Certs) -> None:
    tls = TLSConfig(ca_cert=certs.other_ca, client_cert=certs.client_cert, client_key=certs.client_key)
    with PredictionClient(served_tls.target, tls=tls, deadline=5, retries=1) as client:
        with pytest.raises(TLSHandshakeError, match="TLS handshake with 127.0.0.1"):
            client.status(served_tls.model)


def test_missing_client_certificate_is_refused(served_tls: Served, certs: Certs) -> None:
    with PredictionClient(served_tls.target, tls=TLSConfig(ca_cert=certs.ca), deadline=5, retries=1) as client:
        with pytest.raises(ClientError) as info:
            client.status(served_tls.model)
    assert info.value.code == "UNAVAILABLE" and "\n" not in str(info.value)


def test_plain_client_against_tls_server(served_tls: Served) -> None:
    with PredictionClient(served_tls.target, deadline=5, retries=1) as client:
        with pytest.raises((TargetUnavailableError, TLSHandshakeError)) as info:
            client.status(served_tls.model)
    print(info.value)
    assert "127.0.0.1" in str(info.value)


def test_tls_client_against_plain_server(served: Served, certs: Certs) -> None:
    with PredictionClient(served.target, tls=TLSConfig(ca_cert=certs.ca), deadline=5, retries=1) as client:
        with pytest.raises(TLSHandshakeError):
            client.status(served.model)


def test_half_configured_client_certificate_is_rejected(certs: Certs) -> None:
    with pytest.raises(ValueError, match="both client_cert and client_key"):
        TLSConfig(ca_cert=certs.ca, client_cert=certs.client_cert).credentials()
