"""Translate: Istio resources + registry -> one Snapshot per proxy, one builder per xDS type (like Istio's
pilot/pkg/networking/core).

Work is shared twice over: within a push, parts every proxy of a namespace gets (outbound clusters, endpoints,
sidecar routes) are built, hashed and packed once; across pushes, each service's clusters, endpoints and virtual
hosts are reused while their inputs' content is unchanged (`PushContext.memo`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import partial

from google.protobuf.message import Message

from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.ca.credentials import CredentialStore, credential_secrets
from mesh.controlplane.ca.secrets import workload_secrets
from mesh.controlplane.translate.clusters import blackhole, inbound_clusters, service_clusters, service_clusters_key
from mesh.controlplane.translate.context import PushContext, ServiceView
from mesh.controlplane.translate.endpoints import service_endpoints, service_endpoints_key
from mesh.controlplane.translate.listeners import build_listeners, credential_name
from mesh.controlplane.translate.routes import (
    build_routes,
    gateway_servers,
    sidecar_routes,
    sidecar_routes_key,
    sidecar_vhost_keys,
    terminates_tls,
)
from mesh.controlplane.xds.snapshot import Resources, Snapshot
from mesh.runtime import Proxy


def _per_service(
    push: PushContext,
    kind: str,
    ns: str,
    key: Callable[[PushContext, ServiceView, str], Hashable],
    build: Callable[[PushContext, ServiceView, str], Sequence[Message]],
    extra: Sequence[Resources] = (),
) -> Resources:
    """One namespace's share of a type: per-service parts reused across pushes while their key holds, combined
    once per push."""

    def make() -> Resources:
        parts = [push.cached(key(push, v, ns), partial(_resources, build, push, v, ns)) for v in push.services.values()]
        parts += extra
        return push.cached((f"{kind}-all", ns, tuple(p.version for p in parts)), partial(Resources.combine, *parts))

    return push.once((kind, ns), make)


def _resources(
    build: Callable[[PushContext, ServiceView, str], Sequence[Message]], push: PushContext, view: ServiceView, ns: str
) -> Resources:
    return Resources.of(build(push, view, ns))


def _outbound_clusters(push: PushContext, ns: str) -> Resources:
    hole = push.cached(("cds-blackhole",), lambda: Resources.of([blackhole()]))
    return _per_service(push, "cds", ns, service_clusters_key, service_clusters, [hole])


def _endpoints(push: PushContext, ns: str) -> Resources:
    return _per_service(push, "eds", ns, service_endpoints_key, service_endpoints)


def _sidecar_routes(push: PushContext, proxy: Proxy) -> Resources:
    return push.once(("rds", sidecar_routes_key(push, proxy)), partial(_build_sidecar_routes, push, proxy))


def _build_sidecar_routes(push: PushContext, proxy: Proxy) -> Resources:
    keyed = sidecar_vhost_keys(push, proxy)
    keys = tuple(k for k, _, _ in keyed)
    return push.cached(("rds-all", keys), lambda: Resources.of([sidecar_routes(push, proxy, keyed)]))


def _gateway_credentials(push: PushContext, proxy: Proxy, store: CredentialStore) -> list[Message]:
    out: list[Message] = []
    seen: set[str] = set()
    for gw, server in gateway_servers(push, proxy):
        if terminates_tls(server):
            name = credential_name(gw, server)
            if name not in seen:
                seen.add(name)
                hosts = tuple(sorted({h.rpartition("/")[2] for h in server.hosts}))
                out += credential_secrets(store.get(name, hosts))
    return out


def build_snapshot(
    push: PushContext, proxy: Proxy, ca: CertificateAuthority, credentials: CredentialStore | None = None
) -> Snapshot:
    ns = proxy.namespace
    shared_cds = _outbound_clusters(push, ns)
    clusters = Resources.combine(shared_cds, Resources.of(inbound_clusters(proxy)))
    routes = _sidecar_routes(push, proxy) if proxy.kind == "sidecar" else Resources.of(build_routes(push, proxy))
    svid = ca.svid(proxy.identity)
    secrets = push.cached(
        ("sds", proxy.identity, svid.serial), lambda: Resources.of(workload_secrets(svid, ca.root_pem))
    )
    if proxy.kind == "router":
        store = credentials or CredentialStore(ca)
        secrets = Resources.combine(secrets, Resources.of(_gateway_credentials(push, proxy, store)))
    return Snapshot.build(
        clusters=clusters,
        endpoints=_endpoints(push, ns),
        listeners=build_listeners(push, proxy),
        routes=routes,
        secrets=secrets,
    )


__all__ = ["PushContext", "build_snapshot"]
