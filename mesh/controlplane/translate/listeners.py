"""LDS. Sidecar: an HTTP-proxy outbound listener (`<ip>_15001`, routes `http_proxy`) and one inbound listener per
service port on the pod IP, with filter chains by PeerAuthentication mode. Gateway: `0.0.0.0_<port>` per server
port, bound where the host exposes it, routes `http.<port>`.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from mesh.api.networking import Gateway, Server
from mesh.controlplane.translate import tcp
from mesh.controlplane.translate.authz import rbac_filters
from mesh.controlplane.translate.context import PushContext, inbound_cluster
from mesh.controlplane.translate.gateway import gateway_servers, server_route_name, terminates_tls
from mesh.controlplane.translate.protos import ads, duration, packed
from mesh.controlplane.translate.ratelimit import rate_limit_filters
from mesh.controlplane.translate.route import CORS_FILTER, FAULT_FILTER
from mesh.controlplane.translate.routes import SIDECAR_ROUTE_CONFIG
from mesh.controlplane.translate.tls import gateway_downstream, istio_mutual_downstream
from mesh.istio import server_host_names
from mesh.istio.protocol import is_http_port
from mesh.observability.envoyconfig import Reporter, instrument
from mesh.runtime import SIDECAR_OUTBOUND_PORT, Proxy

HCM = "envoy.filters.network.http_connection_manager"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _router() -> hcm.HttpFilter:
    return hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))


def _cors(push: PushContext) -> list[hcm.HttpFilter]:
    """Empty: each route's CORS policy rides in typed_per_filter_config. Present only while some rule uses CORS
    (Istio always adds it; adding the first CORS policy here updates the listeners once, gracefully)."""
    if not push.uses_cors:
        return []
    return [hcm.HttpFilter(name=CORS_FILTER, typed_config=packed(cors_pb2.Cors()))]


def _fault() -> hcm.HttpFilter:
    # Empty: the per-route typed_per_filter_config carries each VirtualService fault.
    return hcm.HttpFilter(name=FAULT_FILTER, typed_config=packed(fault_pb2.HTTPFault()))


# Istio's default text format, slightly shortened, with the gRPC status after the HTTP one ("-" for plain HTTP)
ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %GRPC_STATUS% '
    '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(:AUTHORITY)%" "%REQ(X-REQUEST-ID)%" %UPSTREAM_CLUSTER% '
    "%UPSTREAM_HOST% %DOWNSTREAM_REMOTE_ADDRESS%\n"
)


def _access_log() -> accesslog_pb2.AccessLog:
    fmt = file_pb2.FileAccessLog(path="/dev/stdout")
    fmt.log_format.text_format_source.inline_string = ACCESS_LOG_FORMAT
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=packed(fmt))


def _hcm_filter(
    m: hcm.HttpConnectionManager, push: PushContext | None = None, telemetry: tuple[Proxy, Reporter] | None = None
) -> lc.Filter:
    if push is not None and telemetry is not None:  # Istio's metrics (ALS) and traces: mesh.observability
        proxy, reporter = telemetry
        m = instrument(m, push.options.telemetry, reporter, f"{proxy.labels.get('app', proxy.name)}.{proxy.namespace}")
    if push is not None and push.options.access_log:
        logged = hcm.HttpConnectionManager()
        logged.CopyFrom(m)
        logged.access_log.append(_access_log())
        m = logged
    return lc.Filter(name=HCM, typed_config=packed(m))


def build_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    if proxy.kind == "router":
        return tcp.add_gateway_l4(push, proxy, gateway_listeners(push, proxy))
    return [outbound_listener(push, proxy), *inbound_listeners(push, proxy)]


def outbound_listener(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    m = hcm.HttpConnectionManager(
        stat_prefix=f"outbound_{proxy.ip}_{SIDECAR_OUTBOUND_PORT}",
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(route_config_name=SIDECAR_ROUTE_CONFIG, config_source=ads()),
        http_filters=[*_cors(push), _fault(), _router()],
        http_protocol_options=protocol_pb2.Http1ProtocolOptions(allow_absolute_url={"value": True}),
        stream_idle_timeout=duration(0.0),
    )
    return listener_pb2.Listener(
        name=f"{proxy.ip}_{SIDECAR_OUTBOUND_PORT}",
        address=_address(proxy.ip, SIDECAR_OUTBOUND_PORT),
        filter_chains=[lc.FilterChain(filters=[_hcm_filter(m, push, (proxy, "source"))])],
        traffic_direction=2,  # OUTBOUND
    )


def inbound_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    pod = proxy.pod
    assert pod is not None
    filters = [*rbac_filters(push.authorization_policies(proxy)), *rate_limit_filters(push.rate_limits, proxy)]
    out = []
    for port in pod.ports:
        mode = push.mtls_mode(pod, port.number)
        if not is_http_port(port):  # connections, not requests: tcp.py
            out.append(_inbound_listener(pod.ip, port.number, tcp.inbound_tcp_chains(push, proxy, port, mode)))
            continue
        route = route_pb2.RouteConfiguration(
            name=inbound_cluster(port.number),
            virtual_hosts=[
                rc.VirtualHost(
                    name=f"inbound|http|{port.number}",
                    domains=["*"],
                    routes=[
                        rc.Route(
                            name="default",
                            match=rc.RouteMatch(prefix="/"),
                            route=rc.RouteAction(cluster=inbound_cluster(port.number), timeout=duration(0.0)),
                        )
                    ],
                )
            ],
        )
        m = hcm.HttpConnectionManager(
            stat_prefix=f"inbound_{pod.ip}_{port.number}",
            codec_type=hcm.HttpConnectionManager.AUTO,
            route_config=route,
            http_filters=[*filters, _router()],
            forward_client_cert_details=hcm.HttpConnectionManager.APPEND_FORWARD,
            set_current_client_cert_details=hcm.HttpConnectionManager.SetCurrentClientCertDetails(
                subject={"value": True}, uri=True, dns=True
            ),
            stream_idle_timeout=duration(0.0),
        )
        chains = []
        if mode in ("STRICT", "PERMISSIVE"):
            chains.append(
                lc.FilterChain(
                    name=f"inbound_{port.number}_mtls",
                    filter_chain_match=lc.FilterChainMatch(transport_protocol="tls"),
                    transport_socket=istio_mutual_downstream(),
                    filters=[_hcm_filter(m, push, (proxy, "destination"))],
                )
            )
        if mode in ("PERMISSIVE", "DISABLE"):
            chains.append(
                lc.FilterChain(
                    name=f"inbound_{port.number}_plaintext",
                    filter_chain_match=lc.FilterChainMatch(transport_protocol="raw_buffer"),
                    filters=[_hcm_filter(m, push, (proxy, "destination"))],
                )
            )
        out.append(_inbound_listener(pod.ip, port.number, chains))
    return out


def _inbound_listener(ip: str, port: int, chains: list[lc.FilterChain]) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=f"{ip}_{port}",
        address=_address(ip, port),
        listener_filters=[lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed(tls_inspector_pb2.TlsInspector()))],
        filter_chains=chains,
        traffic_direction=1,  # INBOUND
    )


def gateway_listeners(push: PushContext, proxy: Proxy) -> list[listener_pb2.Listener]:
    """One listener per server port; plaintext servers share `http.<port>`, each TLS server gets a filter chain
    matched by SNI (its hosts) with its credential from SDS (`kubernetes://<credentialName>`)."""
    filters = [*rbac_filters(push.authorization_policies(proxy)), *rate_limit_filters(push.rate_limits, proxy)]
    by_port: dict[int, list[tuple[Gateway, Server]]] = {}
    for gw, server in gateway_servers(push, proxy):
        by_port.setdefault(server.port.number, []).append((gw, server))
    out = []
    for port, servers in sorted(by_port.items()):
        if port not in proxy.listen:
            continue  # the host does not expose this gateway port
        ip, host_port = proxy.listen[port]
        chains = []
        for gw, server in servers:
            m = hcm.HttpConnectionManager(
                stat_prefix=f"outbound_0.0.0.0_{port}",
                codec_type=hcm.HttpConnectionManager.AUTO,
                rds=hcm.Rds(route_config_name=server_route_name(gw, server), config_source=ads()),
                http_filters=[*_cors(push), _fault(), *filters, _router()],
                use_remote_address={"value": True},
                stream_idle_timeout=duration(0.0),
            )
            if terminates_tls(server):
                assert server.tls is not None
                names = [h for h in server_host_names(server) if h != "*"]
                chains.append(
                    lc.FilterChain(
                        name=server_route_name(gw, server),
                        filter_chain_match=lc.FilterChainMatch(server_names=names, transport_protocol="tls"),
                        transport_socket=istio_mutual_downstream()  # mesh mTLS (the egress gateway's usual case)
                        if server.tls.mode == "ISTIO_MUTUAL"
                        else gateway_downstream(
                            credential_name(gw, server),
                            mutual=server.tls.mode == "MUTUAL",
                            min_version=server.tls.min_protocol_version,
                        ),
                        filters=[_hcm_filter(m, push, (proxy, "source"))],
                    )
                )
            elif not any(c.name == f"http.{port}" for c in chains):
                chains.append(lc.FilterChain(name=f"http.{port}", filters=[_hcm_filter(m, push, (proxy, "source"))]))
        tls = any(terminates_tls(s) for _, s in servers)
        out.append(
            listener_pb2.Listener(
                name=f"0.0.0.0_{port}",
                address=_address(ip, host_port),
                listener_filters=[
                    lc.ListenerFilter(name=TLS_INSPECTOR, typed_config=packed(tls_inspector_pb2.TlsInspector()))
                ]
                if tls
                else [],
                filter_chains=chains,
                traffic_direction=1,
            )
        )
    return out


def credential_name(gw: Gateway, server: Server) -> str:
    """The server's credentialName, or a name of its own when it gives none (the local CA then issues one)."""
    if server.tls is not None and server.tls.credential_name:
        return server.tls.credential_name
    return f"{gw.namespace}-{gw.name}-{server.port.name}"
