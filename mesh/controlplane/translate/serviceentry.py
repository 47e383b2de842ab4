"""ServiceEntry and WorkloadEntry -> clusters, endpoints, virtual hosts and listeners, as Istio's
`pilot/pkg/networking/core` builds them for entries in its registry.

- Clusters `outbound|PORT|SUBSET|HOST` by resolution: NONE -> ORIGINAL_DST (the client's own destination),
  STATIC -> EDS over the endpoints (inline or WorkloadEntries), DNS -> STRICT_DNS (every address resolved, all
  used), DNS_ROUND_ROBIN -> LOGICAL_DNS (one address at a time). DestinationRule policy applies as to services;
  client TLS ISTIO_MUTUAL, SIMPLE or MUTUAL originates TLS (`origination_tls`).
- HTTP ports: a virtual host per host in the route table of the port (domains `host`, `host:port`), routed by a
  mesh-bound VirtualService when one claims the host. TCP-like ports: a tcp_proxy listener `ADDRESS_PORT` on the
  entry's address (declared or auto-allocated), or `0.0.0.0_PORT` when it has none.
- Visibility: an entry reaches only the namespaces its exportTo names, and a sidecar only the entry hosts its
  Sidecar's egress hosts select.
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from mesh.api.networking import ClientTLSSettings
from mesh.api.registry import ServiceEntry, ServiceEntryPort, WorkloadEntry
from mesh.api.workloads import ServicePort, spiffe_id
from mesh.controlplane.translate.clusters import (
    DEFAULT_CONNECT_TIMEOUT,
    HTTP_OPTIONS,
    _apply_policy,
    protocol_options,
)
from mesh.controlplane.translate.context import PushContext, outbound_cluster, outbound_sni
from mesh.controlplane.translate.protos import ads, duration, packed
from mesh.controlplane.translate.retry import default_retry_policy
from mesh.controlplane.translate.tls import istio_mutual_upstream, origination_tls
from mesh.istio import MESH_GATEWAY, destination_port, mesh_virtual_services, resolve_host, rule_host, tls_settings
from mesh.istio.serviceentries import (
    EntryEndpoint,
    allocate_addresses,
    auto_allocated,
    endpoint_port,
    entry_endpoints,
    is_http,
    port_protocol,
    resolution,
    visible_to,
)
from mesh.runtime import Proxy

TCP_PROXY = "envoy.filters.network.tcp_proxy"


@dataclass(frozen=True)
class EntryHost:
    """One host of a ServiceEntry as the registry holds it."""

    entry: ServiceEntry
    host: str
    address: str  # the entry's first declared address, the auto-allocated one, or "" (none: resolution NONE)
    endpoints: tuple[EntryEndpoint, ...]

    @property
    def ports(self) -> list[ServiceEntryPort]:
        return self.entry.ports

    def port(self, number: int) -> ServiceEntryPort | None:
        return next((p for p in self.entry.ports if p.number == number), None)


_MEMO: weakref.WeakKeyDictionary[PushContext, dict[str, EntryHost]] = weakref.WeakKeyDictionary()


def entry_hosts(push: PushContext) -> dict[str, EntryHost]:
    """host -> its entry, for every ServiceEntry host of the config (the first entry by namespace/name wins a host
    two entries declare). Addresses are auto-allocated when DNS proxying allocates them (Istio's
    ISTIO_META_DNS_AUTO_ALLOCATE)."""
    memo = _MEMO.get(push)
    if memo is not None:
        return memo
    entries = sorted(push.config.of_kind(ServiceEntry), key=lambda e: (e.namespace, e.name))
    workload_entries = push.config.of_kind(WorkloadEntry)
    allocate = push.options.dns_auto_allocate
    auto = allocate_addresses(
        (se.namespace, h) for se in entries if auto_allocated(se) for h in se.hosts if not h.startswith("*")
    )
    out: dict[str, EntryHost] = {}
    for se in entries:
        endpoints = tuple(entry_endpoints(se, workload_entries))
        declared = next((a for a in se.addresses if _single_ip(a)), "")
        for h in se.hosts:
            address = declared or (auto.get((se.namespace, h), "") if allocate else "")
            out.setdefault(h, EntryHost(se, h, address, endpoints))
    _MEMO[push] = out
    return out


def _single_ip(address: str) -> bool:
    try:
        return ipaddress.ip_network(address, strict=False).num_addresses == 1
    except ValueError:
        return False


def visible_entries(push: PushContext, namespace: str) -> list[EntryHost]:
    return [e for e in entry_hosts(push).values() if visible_to(e.entry, namespace)]


def scoped_entries(push: PushContext, proxy: Proxy, port: int) -> list[EntryHost]:
    """Entries visible to the proxy whose `port` its Sidecar egress hosts select (every one without a Sidecar)."""
    scope = push.proxy_scope(proxy).scope
    return [
        e
        for e in visible_entries(push, proxy.namespace)
        if any(p.number == port for p in e.ports) and scope.selects_service(e.entry.namespace, e.host, port)
    ]


def entry_for(push: PushContext, host: str, namespace: str) -> EntryHost | None:
    e = entry_hosts(push).get(resolve_host(host, namespace)) or entry_hosts(push).get(host)
    return e if e is not None and visible_to(e.entry, namespace) else None


def entry_cluster_for(
    push: PushContext, host: str, port: int | None, subset: str, namespace: str, listener: int
) -> str:
    """A VirtualService destination naming an entry host: its cluster (Istio's GetDestinationCluster), or ""."""
    e = entry_for(push, host, namespace)
    if e is None:
        return ""
    number = destination_port(port, [p.number for p in e.ports], listener)
    return outbound_cluster(number, subset, e.host)


# --- clusters and endpoints -------------------------------------------------------------------------------


def _service_port(port: ServiceEntryPort) -> ServicePort:
    protocol = port_protocol(port)
    kind = "http2" if protocol in ("HTTP2", "GRPC", "GRPC-WEB") else "http" if is_http(port) else "tcp"
    return ServicePort(number=port.number, name=port.name, protocol=kind, target_port=port.target_port)


def entry_clusters(push: PushContext, ns: str) -> list[cluster_pb2.Cluster]:
    """`outbound|PORT|SUBSET|HOST` for every entry host visible in `ns`, per port and DestinationRule subset."""
    out = []
    for e in visible_entries(push, ns):
        if e.host.startswith("*") and resolution(e.entry) != "NONE":
            continue  # a wildcard host has nothing to resolve: Istio builds no cluster for it
        dr = push.destination_rule(e.host, ns)
        subsets: list[tuple[str, dict[str, str]]] = [("", {})] + [
            (s.name, s.labels) for s in (dr.subsets if dr else [])
        ]
        for port in e.ports:
            for subset, labels in subsets:
                out.append(_cluster(push, e, port, subset, dict(labels), ns))
    return out


def _cluster(
    push: PushContext, e: EntryHost, port: ServiceEntryPort, subset: str, labels: dict[str, str], ns: str
) -> cluster_pb2.Cluster:
    name = outbound_cluster(port.number, subset, e.host)
    c = cluster_pb2.Cluster(name=name, connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT))
    kind = resolution(e.entry)
    if kind == "NONE":
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    elif kind == "STATIC":
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(service_name=name, eds_config=ads()))
    else:
        c.type = cluster_pb2.Cluster.STRICT_DNS if kind == "DNS" else cluster_pb2.Cluster.LOGICAL_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        c.respect_dns_ttl = True
        c.load_assignment.CopyFrom(_assignment(name, _dns_targets(e, port, labels, kind)))
    tp = push.traffic_policy(e.host, port.number, subset, ns)
    if kind != "NONE":
        _apply_policy(c, tp, _service_port(port))
        if tp.load_balancer is None and kind != "STATIC":
            c.lb_policy = cluster_pb2.Cluster.ROUND_ROBIN  # Istio's choice for DNS clusters
    if is_http(port):  # h2 for HTTP2/GRPC ports; entries are never upgraded (Istio upgrades mesh traffic only)
        options = protocol_options(tp, _service_port(port), "DO_NOT_UPGRADE")
        c.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(packed(options))
    socket = upstream_tls(tp.tls, e, port, subset)
    if socket is not None:
        c.transport_socket.CopyFrom(socket)
    return c


def _dns_targets(e: EntryHost, port: ServiceEntryPort, labels: dict[str, str], kind: str) -> list[tuple[str, int]]:
    """Names (or IPs) a DNS cluster resolves: the endpoints' addresses, else the host itself on the port."""
    chosen = [ep for ep in e.endpoints if labels.items() <= ep.labels.items()]
    targets = [(ep.address, endpoint_port(ep, port)) for ep in chosen] if e.endpoints else []
    if not e.endpoints:
        targets = [(e.host, port.target_port or port.number)]
    return targets[:1] if kind == "DNS_ROUND_ROBIN" else targets


def _assignment(name: str, targets: list[tuple[str, int]]) -> endpoint_pb2.ClusterLoadAssignment:
    lb = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=a, port_value=p))
            )
        )
        for a, p in targets
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)] if lb else []
    )


def entry_endpoints_eds(push: PushContext, ns: str) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """Load assignments of the STATIC entries' EDS clusters (the endpoints a subset's labels select)."""
    out = []
    for e in visible_entries(push, ns):
        if resolution(e.entry) != "STATIC":
            continue
        dr = push.destination_rule(e.host, ns)
        subsets: list[tuple[str, dict[str, str]]] = [("", {})] + [
            (s.name, dict(s.labels)) for s in (dr.subsets if dr else [])
        ]
        for port in e.ports:
            for subset, labels in subsets:
                chosen = [ep for ep in e.endpoints if labels.items() <= ep.labels.items()]
                out.append(
                    _assignment(
                        outbound_cluster(port.number, subset, e.host),
                        [(ep.address, endpoint_port(ep, port)) for ep in chosen],
                    )
                )
    return out


# --- client TLS -------------------------------------------------------------------------------------------


def upstream_tls(
    tls: ClientTLSSettings | None, e: EntryHost, port: ServiceEntryPort, subset: str
) -> base_pb2.TransportSocket | None:
    """The DestinationRule's client TLS toward an entry: none unless asked (entries get no auto mTLS)."""
    if tls is None or tls.mode == "DISABLE":
        return None
    if tls.mode == "ISTIO_MUTUAL":
        sans = list(e.entry.subject_alt_names) or sorted(
            {spiffe_id(e.entry.namespace, ep.service_account) for ep in e.endpoints if ep.service_account}
        )
        return istio_mutual_upstream(tls.sni or outbound_sni(port.number, subset, e.host), sans)
    return origination_tls(tls, e.host)


def origination_credentials(push: PushContext, ns: str) -> list[tuple[str, tuple[str, ...]]]:
    """(credentialName, hosts) every DestinationRule visible in `ns` names for SIMPLE/MUTUAL origination: the
    proxy's SDS must serve them."""
    return _origination_credentials(push)


@functools.lru_cache(maxsize=1)
def _origination_credentials(push: PushContext) -> list[tuple[str, tuple[str, ...]]]:
    """Once per push, not per proxy (every proxy asks; 50 proxies x 1,000 rules was ~90 ms a push)."""
    out: dict[str, tuple[str, ...]] = {}
    for dr in push.destination_rules:
        for tls in tls_settings(dr):
            if tls.mode in ("SIMPLE", "MUTUAL") and tls.credential_name:
                out.setdefault(tls.credential_name, (rule_host(dr),))
    return sorted(out.items())


# --- routes and listeners ---------------------------------------------------------------------------------


def entry_vhosts(push: PushContext, proxy: Proxy, port: int) -> list[rc.VirtualHost]:
    """The virtual hosts of the HTTP entry hosts on `port` visible to the proxy, routed by the mesh-bound
    VirtualService that claims each host (else straight to the entry's cluster)."""
    from mesh.controlplane.translate.route import RouteScope, translate_http  # route.py resolves entry hosts here

    entries = [e for e in scoped_entries(push, proxy, port) if any(p.number == port and is_http(p) for p in e.ports)]
    if not entries:
        return []
    claimed = mesh_virtual_services(push.virtual_services(proxy.namespace), [e.host for e in entries])
    out = []
    for e in entries:
        routes: list[rc.Route] = []
        for vs in claimed.get(e.host, [])[:1]:
            routes += translate_http(RouteScope(push, vs, proxy, port, MESH_GATEWAY))
        if not routes:
            routes.append(
                rc.Route(
                    name="default",
                    match=rc.RouteMatch(prefix="/"),
                    route=rc.RouteAction(cluster=outbound_cluster(port, "", e.host), timeout=duration(0.0)),
                )
            )
        names = [e.host] + ([e.address] if e.address else [])
        domains = [f"{n}:{port}" for n in names] + (names if port == 80 else [])
        out.append(
            rc.VirtualHost(
                name=f"{e.host}:{port}",
                domains=domains,
                routes=routes,
                include_request_attempt_count=True,
                retry_policy=default_retry_policy(),
            )
        )
    return out


def entry_http_ports(push: PushContext) -> list[int]:
    return sorted({p.number for e in entry_hosts(push).values() for p in e.ports if is_http(p)})


def entry_tcp_listeners(push: PushContext, proxy: Proxy, taken: set[int]) -> list[listener_pb2.Listener]:
    """tcp_proxy listeners for the non-HTTP ports of entries visible to the proxy: on the entry's address when it
    has one, else on `0.0.0.0_PORT` unless an HTTP listener already holds the port (`taken`)."""
    out: dict[str, listener_pb2.Listener] = {}
    for e in visible_entries(push, proxy.namespace):
        for port in e.ports:
            if is_http(port) or e not in scoped_entries(push, proxy, port.number):
                continue
            ip = e.address or "0.0.0.0"
            if ip == "0.0.0.0" and port.number in taken:
                continue
            name = f"{ip}_{port.number}"
            cluster = outbound_cluster(port.number, "", e.host)
            proxy_filter = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
            out.setdefault(
                name,
                listener_pb2.Listener(
                    name=name,
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=ip, port_value=port.number)
                    ),
                    bind_to_port={"value": False},
                    filter_chains=[
                        lc.FilterChain(filters=[lc.Filter(name=TCP_PROXY, typed_config=packed(proxy_filter))])
                    ],
                    traffic_direction=2,  # OUTBOUND
                ),
            )
    return [out[k] for k in sorted(out)]
