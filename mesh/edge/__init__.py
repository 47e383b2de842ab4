"""The edge tier: HAProxy in front of the ingress gateway replicas (TLS, HTTP/2, rate limits, health checks)."""

from mesh.edge.config import Replica, render
from mesh.edge.errors import EdgeConfigRejected, EdgePolicyError, EdgeUnavailable
from mesh.edge.haproxy import haproxy_binary
from mesh.edge.tier import EdgeTier

__all__ = [
    "EdgeConfigRejected",
    "EdgePolicyError",
    "EdgeTier",
    "EdgeUnavailable",
    "Replica",
    "haproxy_binary",
    "render",
]
