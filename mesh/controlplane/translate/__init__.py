"""Translate: Istio resources + registry -> one Snapshot per proxy, one builder per xDS type (like Istio's
pilot/pkg/networking/core). Config in, Envoy config out: certificates and gateway credentials are inputs
(`ProxySecrets`, resolved by the Pilot), so translation reads no files and issues nothing.

Work is shared twice over: within a push, parts every proxy of a namespace gets (outbound clusters, endpoints,
sidecar routes) are built, hashed and packed once; across pushes, each service's clusters, endpoints and virtual
hosts are reused while their inputs' content is unchanged (`cache.PushCache`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.message import Message

from mesh.controlplane.ca.authority import SVID
from mesh.controlplane.ca.credentials import Credential, credential_secrets
from mesh.controlplane.ca.secrets import workload_secrets
from mesh.controlplane.translate import capture, tcp, vhds
from mesh.controlplane.translate.cache import PushCache
from mesh.controlplane.translate.clusters import blackhole, gateway_service_clusters, inbound_clusters, service_clusters
from mesh.controlplane.translate.context import MeshOptions, PushContext, ServiceView
from mesh.controlplane.translate.endpoints import gateway_service_endpoints, service_endpoints
from mesh.controlplane.translate.gateway import gateway_servers, needs_credential
from mesh.controlplane.translate.listeners import build_listeners, credential_name
from mesh.controlplane.translate.routes import SIDECAR_ROUTE_CONFIG, build_routes, service_vhost, sidecar_routes
from mesh.controlplane.translate.serviceentry import (
    entry_clusters,
    entry_endpoints_eds,
    entry_hosts,
    origination_credentials,
)
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.snapshot import Resources, Snapshot
from mesh.istio import server_host_names
from mesh.runtime import Proxy


@dataclass(frozen=True)
class ProxySecrets:
    """What a proxy's SDS serves: its SVID with the mesh root, and (gateways) the credentials its servers name."""

    svid: SVID
    root_pem: bytes
    credentials: Mapping[str, Credential] = field(default_factory=dict)


def required_credentials(push: PushContext, proxy: Proxy) -> list[tuple[str, tuple[str, ...]]]:
    """(credentialName, the hosts a server presents it for) for every TLS server this gateway terminates."""
    out: dict[str, tuple[str, ...]] = {}
    for gw, server in gateway_servers(push, proxy):
        if needs_credential(server):
            out.setdefault(credential_name(gw, server), tuple(server_host_names(server)))
    for name, hosts in origination_credentials(push, proxy.namespace):  # DestinationRule SIMPLE/MUTUAL
        out.setdefault(name, hosts)
    return list(out.items())


def _per_service(
    cache: PushCache,
    kind: str,
    proxy: Proxy,
    key: Callable[[ServiceView, str], Hashable],
    build: Callable[[PushContext, ServiceView, str], Sequence[Message]],
    extra: Sequence[Resources] = (),
) -> Resources:
    """One namespace's share of a type, for the services its Sidecar scope shows: per-service parts reused across
    pushes while their key holds, combined once per push."""
    push, ns = cache.push, proxy.namespace
    scope = push.proxy_scope(proxy)

    def make() -> Resources:
        parts = [cache.cached(key(v, ns), partial(_resources, build, push, v, ns)) for v in scope.services.values()]
        parts += extra
        return cache.cached((f"{kind}-all", ns, tuple(p.version for p in parts)), partial(Resources.combine, *parts))

    return cache.once((kind, ns, scope.key), make)


def _resources(
    build: Callable[[PushContext, ServiceView, str], Sequence[Message]], push: PushContext, view: ServiceView, ns: str
) -> Resources:
    return Resources.of(build(push, view, ns))


def _outbound_clusters(cache: PushCache, proxy: Proxy) -> Resources:
    hole = cache.cached(("cds-blackhole",), lambda: Resources.of([blackhole()]))
    entries = cache.once(
        ("cds-entries", proxy.namespace), lambda: Resources.of(entry_clusters(cache.push, proxy.namespace))
    )
    if proxy.kind == "router":  # not captured: no ORIGINAL_DST clusters for headless services
        key = _router_key(cache.clusters_key)
        return _per_service(cache, "cds-router", proxy, key, gateway_service_clusters, [hole, entries])
    return _per_service(cache, "cds", proxy, cache.clusters_key, service_clusters, [hole, entries])


def _router_key(key: Callable[[ServiceView, str], Hashable]) -> Callable[[ServiceView, str], Hashable]:
    return lambda view, ns: ("router", key(view, ns))


def _endpoints(cache: PushCache, proxy: Proxy) -> Resources:
    ns = proxy.namespace
    entries = cache.once(("eds-entries", ns), lambda: Resources.of(entry_endpoints_eds(cache.push, ns)))
    if proxy.kind == "router":
        key = _router_key(cache.endpoints_key)
        return _per_service(cache, "eds-router", proxy, key, gateway_service_endpoints, [entries])
    return _per_service(cache, "eds", proxy, cache.endpoints_key, service_endpoints, [entries])


def _sidecar_routes(cache: PushCache, proxy: Proxy) -> Resources:
    return cache.once(("rds", cache.sidecar_routes_key(proxy)), partial(_build_sidecar_routes, cache, proxy))


def _build_sidecar_routes(cache: PushCache, proxy: Proxy) -> Resources:
    push = cache.push
    keyed = cache.vhost_keys(proxy)

    def make() -> Resources:
        vhosts = [cache.cached(k, partial(service_vhost, push, proxy, view, port)) for k, view, port in keyed]
        return Resources.of([sidecar_routes(push, proxy, vhosts)])

    return cache.cached(("rds-all", tuple(k for k, _, _ in keyed)), make)


def _secrets(cache: PushCache, proxy: Proxy, secrets: ProxySecrets) -> Resources:
    svid = secrets.svid
    workload = cache.cached(
        ("sds", proxy.identity, svid.serial), lambda: Resources.of(workload_secrets(svid, secrets.root_pem))
    )
    if proxy.kind != "router":
        origination = _origination_secrets(cache.push, proxy, secrets)
        return Resources.combine(workload, Resources.of(origination)) if origination else workload
    credentials = [
        m for name, _ in required_credentials(cache.push, proxy) for m in credential_secrets(secrets.credentials[name])
    ]
    return Resources.combine(workload, Resources.of(credentials))


def _origination_secrets(push: PushContext, proxy: Proxy, secrets: ProxySecrets) -> list[Message]:
    """The credentialNames DestinationRules originate TLS with (SIMPLE/MUTUAL), for a proxy that is not a gateway
    (a gateway's come with its own credentials)."""
    if proxy.kind == "router":
        return []
    names = [name for name, _ in origination_credentials(push, proxy.namespace) if name in secrets.credentials]
    return [m for name in names for m in credential_secrets(secrets.credentials[name])]


def build_snapshot(push: PushContext, proxy: Proxy, secrets: ProxySecrets, cache: PushCache | None = None) -> Snapshot:
    """One proxy's complete config. `cache` carries reusable pieces across proxies and pushes (a fresh one if None)."""
    cache = cache or PushCache(push)
    if proxy.kind == "sidecar" and push.options.interception == "iptables":
        return _captured_snapshot(cache, proxy, secrets)
    local = [*inbound_clusters(proxy), *tcp.sni_dnat_clusters(push, proxy)]
    clusters = Resources.combine(_outbound_clusters(cache, proxy), Resources.of(local))
    if proxy.kind != "sidecar":
        return Snapshot.build(
            clusters=clusters,
            endpoints=_endpoints(cache, proxy),
            listeners=build_listeners(push, proxy),
            routes=Resources.of(build_routes(push, proxy)),
            secrets=_secrets(cache, proxy, secrets),
        )
    tables = _sidecar_tables(cache, proxy)
    return Snapshot.build(
        clusters=clusters,
        endpoints=_endpoints(cache, proxy),
        listeners=vhds.retarget(build_listeners(push, proxy), _over_vhds(tables)),
        **tables,
        secrets=_secrets(cache, proxy, secrets),
    )


def _over_vhds(routes: dict[str, Resources]) -> set[str]:
    """The tables (by their RDS names) whose hosts go over VHDS: their listeners are pointed at `<table>.vhds`."""
    names = routes["routes"].items.keys() if "virtual_hosts" in routes else ()
    return {n.removesuffix(vhds.SUFFIX) for n in names if n.endswith(vhds.SUFFIX)}


def rebuild_routes(push: PushContext, proxy: Proxy, previous: Snapshot, cache: PushCache) -> Snapshot:
    """A sidecar's snapshot after a change that reaches its routes only: a VirtualService change that left the
    services its scope holds as they were (`changes.py`). Outside transparent interception a VirtualService reaches
    nothing else of a sidecar (its TCP listeners, which read VirtualServices, exist only under it), so the route
    tables are translated again and every other type is the previous snapshot's object."""
    assert proxy.kind == "sidecar" and push.options.interception != "iptables"
    routed = Snapshot.build(**_sidecar_tables(cache, proxy)).by_type
    merged = {**{t: r for t, r in previous.by_type.items() if t not in (rt.ROUTE, rt.VIRTUAL_HOST)}, **routed}
    return Snapshot(MappingProxyType({t: merged[t] for t in rt.ORDER if t in merged}))


def _sidecar_tables(cache: PushCache, proxy: Proxy) -> dict[str, Resources]:
    """HTTP_PROXY mode's one route table: whole over RDS, or its virtual hosts over VHDS when that pays, each built
    from the memo's per-service host (keyed like it), never the whole table."""
    keyed = cache.once(("vhost-keys", cache.sidecar_routes_key(proxy)), partial(cache.vhost_keys, proxy))
    if not vhds.pays(cache.push.options, len(keyed)):
        return {"routes": _sidecar_routes(cache, proxy)}
    push = cache.push

    def one(key: Hashable, view: ServiceView, port: int) -> Resources:
        vh = cache.cached(key, partial(service_vhost, push, proxy, view, port))
        return vhds.host(vhds.table_name(SIDECAR_ROUTE_CONFIG), vh)

    def hosts() -> Resources:
        parts = [cache.cached(("vhds", k), partial(one, k, view, port)) for k, view, port in keyed]
        return Resources.combine(*parts)

    table = cache.cached(("vhds-table",), lambda: Resources.of([vhds.bare(sidecar_routes(push, proxy, []))]))
    all_hosts = cache.cached(("vhds-all", tuple(k for k, _, _ in keyed)), hosts)
    return {"routes": table, "virtual_hosts": all_hosts}


def _deliver(cache: PushCache, routes: Resources) -> dict[str, Resources]:
    """A sidecar's route tables, whole over RDS, or their virtual hosts over VHDS (`vhds.py`) when that pays."""
    if not vhds.wanted(cache.push.options, routes.items.values()):
        return {"routes": routes}
    tables, hosts = cache.cached(("vhds-split", routes.version), partial(vhds.split, cache, routes))
    return {"routes": tables, "virtual_hosts": hosts}


def _entries_key(cache: PushCache, proxy: Proxy) -> tuple[Hashable, ...]:
    """What ServiceEntry virtual hosts read beyond the shared routes: the entries, every VirtualService (one may
    claim an entry host), and who asks (visibility, source labels). Empty without entries."""
    push = cache.push
    if not entry_hosts(push):
        return ()
    vss = tuple(cache.digest(vs) for vs in push.config.virtual_services)
    return (cache.world_digest, vss, cache.sidecar_routes_key(proxy))


def _captured_snapshot(cache: PushCache, proxy: Proxy, secrets: ProxySecrets) -> Snapshot:
    """A sidecar under transparent interception (`capture.py`): virtualOutbound/virtualInbound, per-port route
    tables cut from the shared sidecar routes, passthrough clusters."""
    push = cache.push
    shared = _sidecar_routes(cache, proxy)
    sidecar = next(iter(shared.items.values()))
    assert isinstance(sidecar, RouteConfiguration)
    policy = push.proxy_scope(proxy).outbound_traffic_policy
    routes = cache.cached(
        ("rds-capture", shared.version, policy, *_entries_key(cache, proxy)),
        lambda: Resources.of(capture.capture_routes(push, sidecar, proxy, policy)),
    )
    local = [*capture.passthrough_clusters(), *capture.bind_inbound(inbound_clusters(proxy))]
    delivered = _deliver(cache, routes)
    return Snapshot.build(
        clusters=Resources.combine(_outbound_clusters(cache, proxy), Resources.of(local)),
        endpoints=_endpoints(cache, proxy),
        listeners=vhds.retarget(capture.capture_listeners(push, proxy), _over_vhds(delivered)),
        **delivered,
        secrets=_secrets(cache, proxy, secrets),
    )


__all__ = [
    "MeshOptions",
    "ProxySecrets",
    "PushCache",
    "PushContext",
    "build_snapshot",
    "rebuild_routes",
    "required_credentials",
]
