"""TCP and TLS traffic, as Istio builds it (`listener.go`, `filterchain_options.go`, `gateway.go`): connections
routed by address, port and SNI with `tcp_proxy`, never by Host.

- Sidecar outbound (transparent interception only): a listener `<VIP>_<port>` per TCP-family service port (not
  bound; virtualOutbound hands connections to it by their original destination). Its filter chains: one per
  `VirtualService.tls` match (`server_names` = sniHosts, read by `tls_inspector`), then the first applicable
  `VirtualService.tcp` rule (or the service itself) as the default chain; weighted routes are
  `tcp_proxy.weighted_clusters`, so a split is per connection.
- Sidecar inbound: per TCP port, the mTLS chain (ALPN `istio`) and, as PeerAuthentication allows, plaintext and
  non-mesh TLS chains, each `envoy.filters.network.rbac` (AuthorizationPolicy) then `tcp_proxy` to the app.
- Gateway: `TCP` servers (tcp routes), `PASSTHROUGH` servers (tls routes by SNI; the client's TLS reaches the
  app untouched) and `AUTO_PASSTHROUGH` servers (SNI `outbound_.<port>_.<subset>_.<fqdn>` straight to the
  `sni-dnat` cluster of that name, for callers that bring their own mesh mTLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from mesh.api.networking import Gateway, L4MatchAttributes, RouteDestination, Server, TLSMatchAttributes, VirtualService
from mesh.api.workloads import ServicePort
from mesh.controlplane.translate.authz import network_rbac_filters
from mesh.controlplane.translate.clusters import ALPN_HTTP, BLACKHOLE, DEFAULT_CONNECT_TIMEOUT
from mesh.controlplane.translate.context import (
    PushContext,
    ServiceView,
    inbound_cluster,
    outbound_cluster,
    outbound_sni,
    routes_by_original_destination,
    tcp_ports,
)
from mesh.controlplane.translate.protos import ads, duration, packed
from mesh.controlplane.translate.tls import istio_mutual_downstream
from mesh.istio import MESH_GATEWAY, gateway_key, gateway_ref, host_matches, server_host_names
from mesh.runtime import Proxy

TCP_PROXY = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"

L4_GATEWAY_PROTOCOLS = ("TCP", "TLS", "MONGO", "MYSQL", "REDIS")


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _tls_inspector() -> lc.ListenerFilter:
    return lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed(tls_inspector_pb2.TlsInspector()))


# --- destinations ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destinations:
    """Where one chain sends its connections: (cluster, weight) pairs; one pair is a plain `cluster`."""

    clusters: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, push: PushContext, vs: VirtualService, route: Sequence[RouteDestination], port: int) -> Destinations:
        """A rule's destinations; a destination without a port keeps the connection's port, as Istio does."""
        out = []
        for d in route:
            weight = d.weight if d.weight is not None else (100 if len(route) == 1 else 0)
            if weight <= 0:
                continue
            view = push.service(d.destination.host, vs.namespace)
            if view is None:
                out.append((BLACKHOLE, weight))
                continue
            to_port = d.destination.port.number if d.destination.port and d.destination.port.number else port
            out.append((outbound_cluster(to_port, d.destination.subset or "", view.fqdn), weight))
        return cls(tuple(out) or ((BLACKHOLE, 1),))

    def filter(self, stat_prefix: str) -> lc.Filter:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
        if len(self.clusters) == 1:
            proxy.cluster = self.clusters[0][0]
        else:
            for cluster, weight in self.clusters:
                proxy.weighted_clusters.clusters.add(name=cluster, weight=weight)
        return lc.Filter(name=TCP_PROXY, typed_config=packed(proxy))


def _sidecar_applies(m: L4MatchAttributes | TLSMatchAttributes, proxy: Proxy, port: int) -> bool:
    """Istio's per-proxy filter of a tcp/tls match: its port, the caller's labels and namespace, `mesh`."""
    if m.port is not None and m.port != port:
        return False
    if m.gateways and MESH_GATEWAY not in m.gateways:
        return False
    if m.source_namespace and m.source_namespace != proxy.namespace:
        return False
    return m.source_labels.items() <= proxy.labels.items()


# --- sidecar outbound -----------------------------------------------------------------------------------------


def service_addresses(push: PushContext) -> dict[str, str]:
    """fqdn -> the service's VIP (the local target allocates them under transparent interception)."""
    return dict(push.options.service_vips)


def outbound_tcp_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """`<VIP>_<port>` for every TCP-family service port (`<pod ip>_<port>` per pod of a headless one):
    virtualOutbound's hand-off by original destination."""
    vips = service_addresses(push)
    out = []
    for view in push.proxy_scope(proxy).services.values():  # what its Sidecar lets it see
        vip = vips.get(view.fqdn)
        # a headless service has no VIP: Istio listens per endpoint (`<pod ip>_<port>`), to its ORIGINAL_DST cluster
        addresses = [vip] if vip else [p.ip for p in view.pods] if routes_by_original_destination(push, view) else []
        for address in addresses:
            for port in tcp_ports(view.service):
                out.append(_outbound_listener(push, proxy, view, port, address))
    return out


def _outbound_listener(
    push: PushContext, proxy: Proxy, view: ServiceView, port: ServicePort, vip: str
) -> listener_pb2.Listener:
    name = f"{vip}_{port.number}"
    chains = sidecar_tls_chains(push, proxy, view, port.number)
    listener = listener_pb2.Listener(
        name=name,
        address=_address(vip, port.number),
        bind_to_port={"value": False},
        listener_filters=[_tls_inspector()] if chains else [],
        filter_chains=chains,
        traffic_direction=2,  # OUTBOUND
    )
    default = sidecar_tcp_destinations(push, proxy, view, port.number)
    listener.default_filter_chain.CopyFrom(
        lc.FilterChain(name=f"{name}-tcp", filters=[default.filter(f"outbound|{port.number}||{view.fqdn}")])
    )
    return listener


def sidecar_tls_chains(push: PushContext, proxy: Proxy, view: ServiceView, port: int) -> list[lc.FilterChain]:
    """One chain per applicable `tls` match of the VirtualServices routing this service, in their order."""
    chains: list[lc.FilterChain] = []
    seen: set[tuple[str, ...]] = set()
    for vs in push.mesh_virtual_services(proxy.namespace).get(view.fqdn, []):
        for i, rule in enumerate(vs.tls):
            for m in rule.match:
                names = tuple(sorted(set(m.sni_hosts)))
                if not _sidecar_applies(m, proxy, port) or names in seen:
                    continue  # a later match for the same names could never be reached
                seen.add(names)
                dest = Destinations.of(push, vs, rule.route, port)
                chains.append(
                    lc.FilterChain(
                        name=f"tls.{vs.namespace}.{vs.name}.{i}",
                        filter_chain_match=lc.FilterChainMatch(server_names=list(names), transport_protocol="tls"),
                        filters=[dest.filter(f"outbound|{port}||{view.fqdn}")],
                    )
                )
    return chains


def sidecar_tcp_destinations(push: PushContext, proxy: Proxy, view: ServiceView, port: int) -> Destinations:
    """The first applicable `tcp` rule of the VirtualServices routing this service, else the service itself."""
    for vs in push.mesh_virtual_services(proxy.namespace).get(view.fqdn, []):
        for rule in vs.tcp:
            if not rule.match or any(_sidecar_applies(m, proxy, port) for m in rule.match):
                return Destinations.of(push, vs, rule.route, port)
    return Destinations(((outbound_cluster(port, "", view.fqdn), 1),))


# --- sidecar inbound ------------------------------------------------------------------------------------------


def inbound_tcp_chains(push: PushContext, proxy: Proxy, port: ServicePort, mode: str) -> list[lc.FilterChain]:
    """A TCP port's inbound chains: mTLS (the mesh's ALPN) under STRICT/PERMISSIVE; plaintext and non-mesh TLS
    (passed to the app as bytes) under PERMISSIVE/DISABLE. AuthorizationPolicy runs as network RBAC on each."""
    cluster = inbound_cluster(port.number)
    stat = f"inbound_{port.number}"

    def filters() -> list[lc.Filter]:
        rbac = network_rbac_filters(push.authorization_policies(proxy), port.number, stat)
        proxy_filter = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
        return [*rbac, lc.Filter(name=TCP_PROXY, typed_config=packed(proxy_filter))]

    chains = []
    if mode in ("STRICT", "PERMISSIVE"):
        chains.append(
            lc.FilterChain(
                name=f"inbound_{port.number}_mtls",
                filter_chain_match=lc.FilterChainMatch(transport_protocol="tls", application_protocols=list(ALPN_HTTP)),
                transport_socket=istio_mutual_downstream(),
                filters=filters(),
            )
        )
    if mode in ("PERMISSIVE", "DISABLE"):
        for transport in ("raw_buffer", "tls"):
            chains.append(
                lc.FilterChain(
                    name=f"inbound_{port.number}_plaintext" + ("_tls" if transport == "tls" else ""),
                    filter_chain_match=lc.FilterChainMatch(transport_protocol=transport),
                    filters=filters(),
                )
            )
    return chains


# --- gateway --------------------------------------------------------------------------------------------------


def is_l4_server(server: Server) -> bool:
    """Servers routed as connections: TCP (and databases), and TLS the gateway does not terminate."""
    proto = server.port.protocol
    if proto in ("TLS", "HTTPS") and server.tls is not None and server.tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        return True
    return proto in ("TCP", "MONGO", "MYSQL", "REDIS")


def _gateway_applies(m: L4MatchAttributes | TLSMatchAttributes, gw: Gateway, vs: VirtualService, port: int) -> bool:
    if m.port is not None and m.port != port:
        return False
    return not m.gateways or gateway_key(gw) in {gateway_ref(g, vs.namespace) for g in m.gateways}


def gateway_l4_chains(push: PushContext, proxy: Proxy, gw: Gateway, server: Server) -> list[lc.FilterChain]:
    """The filter chains one L4 server contributes to its port's listener."""
    port = server.port.number
    if server.tls is not None and server.tls.mode == "AUTO_PASSTHROUGH":
        return _auto_passthrough_chains(push, port)
    if server.tls is not None and server.tls.mode == "PASSTHROUGH":
        return _passthrough_chains(push, proxy, gw, server)
    for vs, _ in push.gateway_virtual_services(gw, proxy.namespace):
        for rule in vs.tcp:
            if not rule.match or any(_gateway_applies(m, gw, vs, port) for m in rule.match):
                dest = Destinations.of(push, vs, rule.route, port)
                return [lc.FilterChain(name=f"tcp.{port}", filters=[dest.filter(f"outbound_0.0.0.0_{port}")])]
    return []


def _passthrough_chains(push: PushContext, proxy: Proxy, gw: Gateway, server: Server) -> list[lc.FilterChain]:
    """A chain per `tls` match whose sniHosts the server serves; the client's TLS goes to the app untouched."""
    port = server.port.number
    hosts = server_host_names(server)
    chains = []
    for vs, _ in push.gateway_virtual_services(gw, proxy.namespace):
        for i, rule in enumerate(vs.tls):
            for m in rule.match:
                names = sorted({h for h in m.sni_hosts if any(host_matches(s, h) for s in hosts)})
                if not names or not _gateway_applies(m, gw, vs, port):
                    continue
                dest = Destinations.of(push, vs, rule.route, port)
                chains.append(
                    lc.FilterChain(
                        name=f"tls.{port}.{vs.namespace}.{vs.name}.{i}",
                        filter_chain_match=lc.FilterChainMatch(server_names=names, transport_protocol="tls"),
                        filters=[dest.filter(f"outbound_0.0.0.0_{port}")],
                    )
                )
    return chains


def _sni_dnat_names(push: PushContext) -> list[tuple[str, str]]:
    """(SNI, EDS service name) for every service port and subset: what AUTO_PASSTHROUGH routes by."""
    out = []
    for view in push.services.values():
        dr = push.destination_rule(view.fqdn, view.service.namespace)
        for port in view.service.ports:
            for subset in ["", *(s.name for s in (dr.subsets if dr else []))]:
                out.append(
                    (outbound_sni(port.number, subset, view.fqdn), outbound_cluster(port.number, subset, view.fqdn))
                )
    return out


def _auto_passthrough_chains(push: PushContext, port: int) -> list[lc.FilterChain]:
    chains = []
    for sni, _ in _sni_dnat_names(push):
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=sni, cluster=sni)
        chains.append(
            lc.FilterChain(
                name=f"auto.{port}.{sni}",
                filter_chain_match=lc.FilterChainMatch(server_names=[sni], transport_protocol="tls"),
                filters=[lc.Filter(name=TCP_PROXY, typed_config=packed(proxy))],
            )
        )
    return chains


def uses_auto_passthrough(push: PushContext, proxy: Proxy) -> bool:
    return any(
        s.tls is not None and s.tls.mode == "AUTO_PASSTHROUGH" for gw in push.gateways_for(proxy) for s in gw.servers
    )


def sni_dnat_clusters(push: PushContext, proxy: Proxy) -> list[cluster_pb2.Cluster]:
    """`outbound_.<port>_.<subset>_.<fqdn>` clusters (Istio's sni-dnat): the service's endpoints, no TLS of
    their own (the caller's mTLS passes through), for gateways with an AUTO_PASSTHROUGH server."""
    if proxy.kind != "router" or not uses_auto_passthrough(push, proxy):
        return []
    return [
        cluster_pb2.Cluster(
            name=sni,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name=eds, eds_config=ads()),
            connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
            lb_policy=cluster_pb2.Cluster.LEAST_REQUEST,
        )
        for sni, eds in _sni_dnat_names(push)
    ]


def add_gateway_l4(
    push: PushContext, proxy: Proxy, listeners: list[listener_pb2.Listener]
) -> list[listener_pb2.Listener]:
    """The gateway's listeners with the L4 servers' chains added: to the port's HTTP listener when it has one
    (with tls_inspector, so SNI picks the chain), else to a listener of their own."""
    by_port: dict[int, list[lc.FilterChain]] = {}
    for gw in push.gateways_for(proxy):
        for server in gw.servers:
            if is_l4_server(server):
                by_port.setdefault(server.port.number, []).extend(gateway_l4_chains(push, proxy, gw, server))
    by_name = {listener.name: listener for listener in listeners}
    out = list(listeners)
    for port, chains in sorted(by_port.items()):
        if port not in proxy.listen or not chains:
            continue
        existing = by_name.get(f"0.0.0.0_{port}")
        if existing is None:
            ip, host_port = proxy.listen[port]
            existing = listener_pb2.Listener(
                name=f"0.0.0.0_{port}", address=_address(ip, host_port), traffic_direction=1
            )
            out.append(existing)
        existing.filter_chains.extend(chains)
        if not any(f.name == TLS_INSPECTOR for f in existing.listener_filters) and any(
            c.filter_chain_match.server_names for c in chains
        ):
            existing.listener_filters.append(_tls_inspector())
    return out
