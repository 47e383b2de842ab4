"""The neutral runtime model: pods, proxies and the registry, shared by the control plane, data plane and harness.

Below both `controlplane` and `dataplane` (which must never import `controlplane`); it knows no Envoy config.
"""

from mesh.runtime.pods import (
    GATEWAY_LABELS,
    GATEWAY_NAMESPACE,
    GATEWAY_SERVICE_ACCOUNT,
    SIDECAR_ADMIN_PORT,
    SIDECAR_OUTBOUND_PORT,
    Pod,
    Proxy,
    gateway_proxy,
    pod_dns_names,
    pods_for,
    sidecar_for,
)
from mesh.runtime.registry import Registry

__all__ = [
    "GATEWAY_LABELS",
    "GATEWAY_NAMESPACE",
    "GATEWAY_SERVICE_ACCOUNT",
    "SIDECAR_ADMIN_PORT",
    "SIDECAR_OUTBOUND_PORT",
    "Pod",
    "Proxy",
    "Registry",
    "gateway_proxy",
    "pod_dns_names",
    "pods_for",
    "sidecar_for",
]
