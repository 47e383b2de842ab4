"""CDS: `outbound|PORT|SUBSET|FQDN` per service port and subset (DestinationRule policy applied), plus a
sidecar's `inbound|PORT||` clusters pointing at its own app."""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from envoy.type.v3 import percent_pb2

from mesh.api.networking import HTTPSettings, TrafficPolicy
from mesh.api.workloads import ServicePort
from mesh.controlplane.translate.context import (
    PushContext,
    ServiceView,
    http_ports,
    inbound_cluster,
    outbound_cluster,
    outbound_sni,
    pod_cluster,
    routes_by_original_destination,
    routes_pods_by_name,
)
from mesh.controlplane.translate.protos import MAX_UINT32, ads, duration, packed, u32
from mesh.controlplane.translate.tls import istio_mutual_upstream, origination_tls
from mesh.istio.protocol import is_http2, is_http_port, port_protocol
from mesh.runtime import Proxy

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
DEFAULT_CONNECT_TIMEOUT = 10.0
BLACKHOLE = "BlackHoleCluster"
# Istio's ALPN toward a peer sidecar (util.ALPNInMeshWithMxc / ALPNInMeshH2WithMxc)
ALPN_HTTP = ("istio-peer-exchange", "istio")
ALPN_H2 = ("istio-peer-exchange", "istio", "h2")

_LB = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
}


def blackhole() -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(name=BLACKHOLE, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration(1.0))


def inbound_clusters(proxy: Proxy) -> list[cluster_pb2.Cluster]:
    """A sidecar's `inbound|PORT||` clusters: its own app, on the pod's private address."""
    if proxy.kind != "sidecar" or proxy.pod is None:
        return []
    return [_inbound(proxy.pod.app_ip, p, proxy.pod.app_socket) for p in proxy.pod.ports]


def service_clusters(push: PushContext, view: ServiceView, ns: str) -> list[cluster_pb2.Cluster]:
    """A sidecar's clusters for a service (ORIGINAL_DST for a headless one under capture, plus one cluster per pod
    of a headless one in the HTTP_PROXY mode)."""
    out = _service_clusters(push, view, ns, routes_by_original_destination(push, view))
    if routes_pods_by_name(push, view):
        for port in http_ports(view.service):
            for pod in view.pods:
                c = _outbound(push, view, port, "", ns, False)
                c.name = c.eds_cluster_config.service_name = pod_cluster(port.number, pod, view)
                out.append(c)
    return out


def gateway_service_clusters(push: PushContext, view: ServiceView, ns: str) -> list[cluster_pb2.Cluster]:
    """A gateway's: never ORIGINAL_DST, since nothing captures a gateway's connections (Istio gives gateways
    EDS clusters for headless services too)."""
    return _service_clusters(push, view, ns, False)


def _service_clusters(push: PushContext, view: ServiceView, ns: str, original_dst: bool) -> list[cluster_pb2.Cluster]:
    dr = push.destination_rule(view.fqdn, ns)
    out = []
    for port in view.service.ports:  # TCP ports too: tcp_proxy reaches them (tcp.py)
        out.append(_outbound(push, view, port, "", ns, original_dst))
        for subset in dr.subsets if dr else []:
            out.append(_outbound(push, view, port, subset.name, ns, original_dst))
    return out


def _outbound(
    push: PushContext, view: ServiceView, port: ServicePort, subset: str, ns: str, original_dst: bool
) -> cluster_pb2.Cluster:
    name = outbound_cluster(port.number, subset, view.fqdn)
    tp = push.traffic_policy(view.fqdn, port.number, subset, ns)
    c = cluster_pb2.Cluster(name=name, connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT))
    _apply_policy(c, tp, port)
    if original_dst:
        c.type = cluster_pb2.Cluster.ORIGINAL_DST  # Istio: a headless service's pods are reached where dialled
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
        c.ClearField("ring_hash_lb_config")
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(service_name=name, eds_config=ads()))
    http_opts = protocol_options(tp, port, push.options.h2_upgrade_policy)
    if is_http_port(port):  # a TCP port's connections are bytes to Envoy: no HTTP protocol options
        c.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(packed(http_opts))
    mode = push.upstream_tls(view, port.number, subset, ns)
    if mode in ("SIMPLE", "MUTUAL") and tp.tls is not None:  # origination the DestinationRule asks for
        c.transport_socket.CopyFrom(origination_tls(tp.tls, view.fqdn))
    elif mode == "ISTIO_MUTUAL":
        identities = sorted({p.identity for p in view.pods} or {view.service.identity})
        alpn = ALPN_H2 if is_http_port(port) and speaks_h2(http_opts) else ALPN_HTTP  # TCP chains match it (tcp.py)
        c.transport_socket.CopyFrom(
            istio_mutual_upstream(outbound_sni(port.number, subset, view.fqdn), identities, alpn)
        )
    return c


def should_h2_upgrade(tp: TrafficPolicy, port: ServicePort, mesh_policy: str) -> bool:
    """Istio's shouldH2Upgrade: the DestinationRule's h2UpgradePolicy decides when it says UPGRADE or
    DO_NOT_UPGRADE; otherwise HTTP/1.1 ports follow meshConfig.h2UpgradePolicy (http2/grpc ports speak h2 anyway)."""
    http = tp.connection_pool.http if tp.connection_pool else None
    override = http.h2_upgrade_policy if http else None
    if override in ("UPGRADE", "DO_NOT_UPGRADE"):
        return override == "UPGRADE"
    return port_protocol(port) == "HTTP" and mesh_policy == "UPGRADE"


def protocol_options(tp: TrafficPolicy, port: ServicePort, mesh_h2_upgrade: str) -> hpo.HttpProtocolOptions:
    """The upstream protocol of an outbound cluster, as Istio picks it: h2 for http2/grpc ports and upgraded
    HTTP/1.1 ports, the caller's own protocol under useClientProtocol (which wins over an upgrade), else HTTP/1.1.
    maxConcurrentStreams and http2KeepAlive shape every h2 connection."""
    opts = hpo.HttpProtocolOptions()
    http = tp.connection_pool.http if tp.connection_pool else None
    if http and http.use_client_protocol:
        downstream = opts.use_downstream_protocol_config
        downstream.http_protocol_options.SetInParent()
        downstream.http2_protocol_options.CopyFrom(_h2_options(http))
    elif is_http2(port_protocol(port)) or should_h2_upgrade(tp, port, mesh_h2_upgrade):
        opts.explicit_http_config.http2_protocol_options.CopyFrom(_h2_options(http))
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    common = protocol_pb2.HttpProtocolOptions()
    if http and http.max_requests_per_connection:
        common.max_requests_per_connection.value = http.max_requests_per_connection
    if http and http.idle_timeout:
        common.idle_timeout.CopyFrom(duration(http.idle_timeout))
    if common.ByteSize():
        opts.common_http_protocol_options.CopyFrom(common)
    return opts


def _h2_options(http: HTTPSettings | None) -> protocol_pb2.Http2ProtocolOptions:
    out = protocol_pb2.Http2ProtocolOptions()
    if http is None:
        return out
    if http.max_concurrent_streams:
        out.max_concurrent_streams.value = http.max_concurrent_streams
    ka = http.http2_keep_alive
    if ka is not None and (ka.interval or ka.timeout):
        if ka.interval:
            out.connection_keepalive.interval.CopyFrom(duration(ka.interval))
        if ka.timeout:
            out.connection_keepalive.timeout.CopyFrom(duration(ka.timeout))
    return out


def speaks_h2(opts: hpo.HttpProtocolOptions) -> bool:
    """Whether a cluster may open HTTP/2 connections (always, or when its caller does)."""
    h2: bool = opts.HasField("use_downstream_protocol_config") or opts.explicit_http_config.HasField(
        "http2_protocol_options"
    )
    return h2


def _apply_policy(c: cluster_pb2.Cluster, tp: TrafficPolicy, port: ServicePort) -> None:
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    lb = tp.load_balancer
    if lb is not None and lb.simple is not None:
        c.lb_policy = _LB[lb.simple]
    if lb is not None and lb.consistent_hash is not None:
        c.lb_policy = cluster_pb2.Cluster.RING_HASH
        if lb.consistent_hash.minimum_ring_size:
            c.ring_hash_lb_config.minimum_ring_size.value = lb.consistent_hash.minimum_ring_size

    # Circuit breaking: Istio's defaults are effectively unlimited.
    t = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=u32(MAX_UINT32),
        max_pending_requests=u32(MAX_UINT32),
        max_requests=u32(MAX_UINT32),
        max_retries=u32(MAX_UINT32),
        track_remaining=True,
    )
    pool = tp.connection_pool
    if pool and pool.tcp:
        if pool.tcp.max_connections:
            t.max_connections.value = pool.tcp.max_connections
        if pool.tcp.connect_timeout:
            c.connect_timeout.CopyFrom(duration(pool.tcp.connect_timeout))
    if pool and pool.http:
        h = pool.http
        if h.http1_max_pending_requests:
            t.max_pending_requests.value = h.http1_max_pending_requests
        if h.http2_max_requests:
            t.max_requests.value = h.http2_max_requests
        if h.max_retries is not None:
            t.max_retries.value = h.max_retries
    c.circuit_breakers.thresholds.append(t)

    od = tp.outlier_detection
    if od is not None:
        o = outlier_detection_pb2.OutlierDetection()
        if od.consecutive_5xx_errors is not None:
            o.consecutive_5xx.value = od.consecutive_5xx_errors
            o.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors > 0 else 0
        else:
            o.enforcing_consecutive_5xx.value = 0
        if od.consecutive_gateway_errors is not None:
            o.consecutive_gateway_failure.value = od.consecutive_gateway_errors
            o.enforcing_consecutive_gateway_failure.value = 100 if od.consecutive_gateway_errors > 0 else 0
        if od.interval:
            o.interval.CopyFrom(duration(od.interval))
        if od.base_ejection_time:
            o.base_ejection_time.CopyFrom(duration(od.base_ejection_time))
        if od.max_ejection_percent is not None:
            o.max_ejection_percent.value = od.max_ejection_percent
        o.enforcing_success_rate.value = 0
        c.outlier_detection.CopyFrom(o)
        if od.min_health_percent is not None:
            c.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=od.min_health_percent))


def _inbound(app_ip: str, port: ServicePort, app_socket: str = "") -> cluster_pb2.Cluster:
    name = inbound_cluster(port.number)
    target = port.target_port or port.number
    if app_socket:  # only the sidecar (same user, owner-only dir) can reach the app at all
        address = address_pb2.Address(pipe=address_pb2.Pipe(path=app_socket))
    else:
        address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=app_ip, port_value=target))
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=address))
                    ]
                )
            ],
        ),
    )
    if not is_http_port(port):
        return c
    opts = hpo.HttpProtocolOptions()
    if is_http2(port_protocol(port)):
        opts.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        opts.explicit_http_config.http_protocol_options.SetInParent()
    c.typed_extension_protocol_options[HTTP_OPTIONS].CopyFrom(packed(opts))
    return c
