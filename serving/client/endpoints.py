"""Several serving endpoints behind one client: a comma list or a `dns:///` name, round_robin.

Across swarm nodes (host networking, no shared virtual IP) the client is the balancer: one
gRPC channel over every address, each call going to the next ready one. A single `host:port`
keeps gRPC's default (pick_first), which is what TF Serving's own clients do.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

ROUND_ROBIN: tuple[str, Any] = ("grpc.lb_policy_name", "round_robin")


def split_endpoints(spec: str) -> list[str]:
    """`"a:1, b:2"` -> ["a:1", "b:2"]; a single address or a `scheme:` URI stays one item."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) == 1 or spec.startswith(("dns:", "ipv4:", "ipv6:", "unix:")):
        return [spec.strip()]
    if not all(parts):
        raise ValueError(f"empty address in endpoint list {spec!r}")
    return parts


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); a missing or bad port is a ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {address!r} is not host:port")
    return host.strip("[]"), int(port)


def resolve(host: str) -> str:
    """A name through the system resolver (its first address)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve endpoint host {host!r}: {exc.strerror}") from None
    return str(infos[0][4][0])


def channel_target(spec: str, resolver: Any = resolve) -> tuple[str, list[tuple[str, Any]]]:
    """(gRPC target, extra channel options) for an endpoint spec.

    A list becomes an `ipv4:`/`ipv6:` address list (gRPC resolves no names there, so they are
    resolved here, once); a `dns:///name:port` keeps gRPC's own resolver, which re-resolves and
    balances over every address the name has. Both get round_robin."""
    if spec.startswith("dns:"):
        return spec, [ROUND_ROBIN]
    items = split_endpoints(spec)
    if len(items) == 1:
        return spec, []
    addresses = []
    for item in items:
        host, port = split_host_port(item)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:  # a name, not a literal
            ip = ipaddress.ip_address(resolver(host))
        addresses.append((ip, port))
    families = {a.version for a, _ in addresses}
    if len(families) > 1:
        raise ValueError(f"endpoint list {spec!r} mixes IPv4 and IPv6 addresses; use one family")
    if families == {4}:
        return "ipv4:" + ",".join(f"{a}:{p}" for a, p in addresses), [ROUND_ROBIN]
    return "ipv6:" + ",".join(f"[{a}]:{p}" for a, p in addresses), [ROUND_ROBIN]
