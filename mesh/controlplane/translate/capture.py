"""A sidecar under transparent interception (iptables), as Istio configures it (`listener.go`,
`listener_builder.go`): the pod's own rules send every outbound TCP connection to `virtualOutbound` (0.0.0.0:15001)
and every inbound one to `virtualInbound` (0.0.0.0:15006).

- `virtualOutbound` restores the original destination and hands the connection to the listener for its port:
  `0.0.0.0_<port>` (not bound; HTTP routed by Host with route table `<port>`); anything else goes to
  `PassthroughCluster` (outboundTrafficPolicy ALLOW_ANY) or `BlackHoleCluster` (REGISTRY_ONLY).
- Each route table `<port>` ends with Istio's catch-all virtual host: `allow_any` -> PassthroughCluster, or
  `block_all` -> 502, so an unknown Host never escapes a REGISTRY_ONLY mesh.
- `virtualInbound` has the inbound filter chains of every service port (by destination port, TLS or plaintext
  as PeerAuthentication decides); the proxy reaches its app at the pod address from `127.0.0.6`, the source its
  iptables rules never redirect.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from mesh.controlplane.translate import tcp
from mesh.controlplane.translate.clusters import BLACKHOLE, DEFAULT_CONNECT_TIMEOUT
from mesh.controlplane.translate.context import PushContext, http_ports
from mesh.controlplane.translate.dns import dns_listener
from mesh.controlplane.translate.listeners import TLS_INSPECTOR, _cors, _fault, _hcm_filter, _router, inbound_listeners
from mesh.controlplane.translate.protos import ads, duration, packed
from mesh.controlplane.translate.serviceentry import entry_http_ports, entry_tcp_listeners, entry_vhosts
from mesh.runtime import Proxy

PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
INBOUND_SOURCE = "127.0.0.6"  # the proxy's source toward its own app; the pod's rules let it through
ORIGINAL_DST = "envoy.filters.listener.original_dst"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _tcp_proxy(cluster: str, stat_prefix: str) -> lc.Filter:
    return lc.Filter(
        name=TCP_PROXY, typed_config=packed(tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=cluster))
    )


def unknown_destination(push: PushContext, policy: str | None = None) -> str:
    """Where a destination the mesh does not know goes: Istio's outboundTrafficPolicy (the proxy's Sidecar's
    `policy` when given, else meshConfig's)."""
    policy = policy or push.options.outbound_traffic_policy
    return BLACKHOLE if policy == "REGISTRY_ONLY" else PASSTHROUGH


def mesh_http_ports(push: PushContext) -> list[int]:
    """HTTP ports of services and ServiceEntries: each gets a `0.0.0.0_<port>` listener and route table `<port>`."""
    services = {p.number for view in push.services.values() for p in http_ports(view.service)}
    return sorted(services | set(entry_http_ports(push)))


# --- listeners ------------------------------------------------------------------------------------------------


def capture_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    policy = push.proxy_scope(proxy).outbound_traffic_policy
    http = outbound_port_listeners(push, proxy)
    services = tcp.outbound_tcp_listeners(push, proxy)  # per VIP: TCP and TLS service ports
    entries = entry_tcp_listeners(push, proxy, set(mesh_http_ports(push)))
    dns = [dns_listener(push, proxy)] if push.options.dns_proxy else []
    return [virtual_outbound(push, policy), *http, *services, *entries, virtual_inbound(push, proxy), *dns]


def virtual_outbound(push: PushContext, policy: str | None = None) -> listener_pb2.Listener:
    cluster = unknown_destination(push, policy)
    return listener_pb2.Listener(
        name=VIRTUAL_OUTBOUND,
        address=_address("0.0.0.0", OUTBOUND_PORT),
        use_original_dst={"value": True},
        default_filter_chain=lc.FilterChain(
            name=f"{VIRTUAL_OUTBOUND}-catchall-tcp", filters=[_tcp_proxy(cluster, cluster)]
        ),
        traffic_direction=2,  # OUTBOUND
    )


def outbound_port_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """`0.0.0.0_<port>` per HTTP service port: not bound, reached only through virtualOutbound's hand-off."""
    out = []
    for port in mesh_http_ports(push):
        m = hcm.HttpConnectionManager(
            stat_prefix=f"outbound_0.0.0.0_{port}",
            codec_type=hcm.HttpConnectionManager.AUTO,
            rds=hcm.Rds(route_config_name=str(port), config_source=ads()),
            http_filters=[*_cors(push), _fault(), _router()],
            stream_idle_timeout=duration(0.0),
        )
        out.append(
            listener_pb2.Listener(
                name=f"0.0.0.0_{port}",
                address=_address("0.0.0.0", port),
                bind_to_port={"value": False},
                filter_chains=[lc.FilterChain(filters=[_hcm_filter(m, push, (proxy, "source"))])],
                traffic_direction=2,
            )
        )
    return out


def virtual_inbound(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    """The per-port inbound chains, matched on the original destination port; other ports pass through to the
    app unless the workload is STRICT (then only its service ports, over mTLS, reach it)."""
    pod = proxy.pod
    assert pod is not None
    chains = []
    for listener in inbound_listeners(push, proxy):
        port = listener.address.socket_address.port_value
        for chain in listener.filter_chains:
            c = lc.FilterChain()
            c.CopyFrom(chain)
            c.filter_chain_match.destination_port.value = port
            chains.append(c)
    default = None
    if push.mtls_mode(pod, 0) != "STRICT":
        default = lc.FilterChain(
            name=f"{VIRTUAL_INBOUND}-catchall-tcp", filters=[_tcp_proxy(INBOUND_PASSTHROUGH, INBOUND_PASSTHROUGH)]
        )
    listener = listener_pb2.Listener(
        name=VIRTUAL_INBOUND,
        address=_address("0.0.0.0", INBOUND_PORT),
        listener_filters=[
            lc.ListenerFilter(name=ORIGINAL_DST, typed_config=packed(original_dst_pb2.OriginalDst())),
            lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed(tls_inspector_pb2.TlsInspector())),
        ],
        filter_chains=chains,
        traffic_direction=1,  # INBOUND
    )
    if default is not None:
        listener.default_filter_chain.CopyFrom(default)
    return listener


# --- routes ---------------------------------------------------------------------------------------------------


def capture_routes(
    push: PushContext, sidecar: route_pb2.RouteConfiguration, proxy: Proxy, policy: str | None = None
) -> list[route_pb2.RouteConfiguration]:
    """Route table `<port>` per HTTP port: the sidecar's virtual hosts for that port, the ServiceEntry hosts'
    (`serviceentry.py`), then Istio's catch-all."""
    out = []
    for port in mesh_http_ports(push):
        vhosts = [vh for vh in sidecar.virtual_hosts if vh.name.endswith(f":{port}")]
        vhosts += entry_vhosts(push, proxy, port)
        out.append(
            route_pb2.RouteConfiguration(
                name=str(port), virtual_hosts=[*vhosts, _catch_all(push, policy)], validate_clusters={"value": False}
            )
        )
    return out


def _catch_all(push: PushContext, policy: str | None = None) -> rc.VirtualHost:
    """Istio's last virtual host of each port: `block_all` (502) under REGISTRY_ONLY, else `allow_any`."""
    route = rc.Route(match=rc.RouteMatch(prefix="/"))
    if unknown_destination(push, policy) == BLACKHOLE:
        route.name = "block_all"
        route.direct_response.status = 502
    else:
        route.name = "allow_any"
        route.route.CopyFrom(rc.RouteAction(cluster=PASSTHROUGH, timeout=duration(0.0)))
    return rc.VirtualHost(name=route.name, domains=["*"], routes=[route])


# --- clusters -------------------------------------------------------------------------------------------------


def passthrough_clusters() -> list[cluster_pb2.Cluster]:
    """Connections to where they were going: outbound as the client asked, inbound to the app from 127.0.0.6."""
    out = []
    for name, source in ((PASSTHROUGH, None), (INBOUND_PASSTHROUGH, INBOUND_SOURCE)):
        c = cluster_pb2.Cluster(
            name=name,
            type=cluster_pb2.Cluster.ORIGINAL_DST,
            lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
            connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
        )
        if source:
            _bind(c, source)
        out.append(c)
    return out


def bind_inbound(clusters: list[cluster_pb2.Cluster]) -> list[cluster_pb2.Cluster]:
    """`inbound|PORT||` clusters reaching the app from 127.0.0.6 (otherwise the rules would loop them back)."""
    out = []
    for cluster in clusters:
        c = cluster_pb2.Cluster()
        c.CopyFrom(cluster)
        _bind(c, INBOUND_SOURCE)
        out.append(c)
    return out


def _bind(cluster: cluster_pb2.Cluster, source: str) -> None:
    cluster.upstream_bind_config.source_address.CopyFrom(_address(source, 0).socket_address)
