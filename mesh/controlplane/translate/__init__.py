"""Translate: Istio resources + registry -> one Snapshot per proxy, one builder per xDS type (like Istio's
pilot/pkg/networking/core). Shared parts (outbound clusters, endpoints, routes) are built once per push."""

from __future__ import annotations

from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.ca.secrets import workload_secrets
from mesh.controlplane.model import Proxy
from mesh.controlplane.translate.clusters import build_clusters
from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.endpoints import build_endpoints
from mesh.controlplane.translate.listeners import build_listeners
from mesh.controlplane.translate.routes import build_routes
from mesh.controlplane.xds.snapshot import Snapshot


def build_snapshot(push: PushContext, proxy: Proxy, ca: CertificateAuthority) -> Snapshot:
    return Snapshot.build(
        clusters=build_clusters(push, proxy),
        endpoints=build_endpoints(push, proxy),
        listeners=build_listeners(push, proxy),
        routes=build_routes(push, proxy),
        secrets=workload_secrets(ca.svid(proxy.identity), ca.root_pem),
    )


__all__ = ["PushContext", "build_snapshot"]
