"""Translate: Istio resources + registry -> one Snapshot per proxy, one builder per xDS type (like Istio's
pilot/pkg/networking/core). Parts every proxy of a namespace shares (outbound clusters, endpoints, sidecar routes)
are built, hashed and packed once per push and combined with each proxy's own part."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.ca.secrets import workload_secrets
from mesh.controlplane.model import Proxy
from mesh.controlplane.translate.clusters import blackhole, inbound_clusters, outbound_clusters
from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.endpoints import build_endpoints
from mesh.controlplane.translate.listeners import build_listeners
from mesh.controlplane.translate.routes import build_routes, sidecar_routes_key
from mesh.controlplane.xds.snapshot import Resources, Snapshot


def _shared(push: PushContext, key: tuple[Any, ...], make: Callable[[], Resources]) -> Resources:
    cache: dict[tuple[Any, ...], Resources] = push.__dict__.setdefault("_shared_resources", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


def build_snapshot(push: PushContext, proxy: Proxy, ca: CertificateAuthority) -> Snapshot:
    ns = proxy.namespace
    clusters = Resources.combine(
        _shared(push, ("cds", ns), lambda: Resources.of([*outbound_clusters(push, ns), blackhole()])),
        Resources.of(inbound_clusters(proxy)),
    )
    endpoints = _shared(push, ("eds", ns), lambda: Resources.of(build_endpoints(push, proxy)))
    if proxy.kind == "sidecar":
        routes = _shared(
            push, ("rds", *sidecar_routes_key(push, proxy)), lambda: Resources.of(build_routes(push, proxy))
        )
    else:
        routes = Resources.of(build_routes(push, proxy))
    svid = ca.svid(proxy.identity)
    secrets = _shared(
        push, ("sds", proxy.identity, svid.serial), lambda: Resources.of(workload_secrets(svid, ca.root_pem))
    )
    return Snapshot.build(
        clusters=clusters, endpoints=endpoints, listeners=build_listeners(push, proxy), routes=routes, secrets=secrets
    )


__all__ = ["PushContext", "build_snapshot"]
