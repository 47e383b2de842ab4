"""Envoy bootstrap JSON shared by the data plane, telemetry, the edge and the benchmarks: static clusters and
addresses. It imports nothing of meshops, so every layer that writes a bootstrap can use it without an edge between
the control plane and the data plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OWNER_ONLY = 0o600
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def pipe_address(path: Path, mode: int = OWNER_ONLY) -> dict[str, Any]:
    """A Unix socket; owner-only by default (admin and the control plane's socket carry credentials)."""
    return {"pipe": {"path": str(path), "mode": mode}}


def static_cluster(name: str, address: dict[str, Any], *, http2: bool = False) -> dict[str, Any]:
    """A bootstrap cluster with one fixed endpoint (HTTP/2 for gRPC services: ADS, access logs, OTLP)."""
    cluster: dict[str, Any] = {"name": name, "type": "STATIC", "connect_timeout": "1s"}
    if http2:
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }
    return cluster
