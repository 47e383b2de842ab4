"""Gateway RDS (Istio's gateway.go): one route table per server port (or per TLS server), a virtual host per host
the bound VirtualServices claim on it."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from mesh.api.networking import Gateway, Server
from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.retry import default_retry_policy
from mesh.controlplane.translate.route import RouteScope, translate_http
from mesh.istio import gateway_key, intersect_hosts, server_hosts
from mesh.runtime import Proxy


def gateway_route_name(port: int) -> str:
    return f"http.{port}"


def terminates_tls(server: Server) -> bool:
    return server.port.protocol == "HTTPS" and server.tls is not None and server.tls.mode in TERMINATED


TERMINATED = ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL")  # ISTIO_MUTUAL: the gateway's own SVID, mesh clients only


def needs_credential(server: Server) -> bool:
    """A terminating server with a certificate of its own (ISTIO_MUTUAL presents the gateway's SVID instead)."""
    return terminates_tls(server) and server.tls is not None and server.tls.mode != "ISTIO_MUTUAL"


def server_route_name(gw: Gateway, server: Server) -> str:
    """Istio's names: `http.<port>` for plaintext servers, `https.<port>.<portName>.<gw>.<ns>` per TLS server."""
    if terminates_tls(server):
        return f"https.{server.port.number}.{server.port.name}.{gw.name}.{gw.namespace}"
    return gateway_route_name(server.port.number)


def gateway_servers(push: PushContext, proxy: Proxy) -> list[tuple[Gateway, Server]]:
    """HTTP-speaking servers of the gateways selecting this proxy (TLS terminated here counts)."""
    return [
        (gw, server)
        for gw in push.gateways_for(proxy)
        for server in gw.servers
        if server.port.protocol in ("HTTP", "HTTP2", "GRPC") or terminates_tls(server)
    ]


def gateway_routes(push: PushContext, proxy: Proxy) -> list[route_pb2.RouteConfiguration]:
    tables: dict[str, tuple[int, dict[str, list[rc.Route]], set[str]]] = {}
    for gw, server in gateway_servers(push, proxy):
        name = server_route_name(gw, server)
        port = server.port.number
        _, hosts_routes, redirect = tables.setdefault(name, (port, {}, set()))
        for vs, hosts in push.gateway_virtual_services(gw, proxy.namespace):
            served = intersect_hosts(server_hosts(server, gw, vs.namespace), hosts)
            if not served:
                continue
            rules = translate_http(RouteScope(push, vs, proxy, port, gateway_key(gw)))
            for h in served:
                hosts_routes.setdefault(h, []).extend(rules)
                if server.tls is not None and server.tls.https_redirect:
                    redirect.add(h)
    return [
        _route_table(name, port, hosts_routes, redirect)
        for name, (port, hosts_routes, redirect) in sorted(tables.items())
    ]


def _route_table(
    name: str, port: int, hosts_routes: dict[str, list[rc.Route]], redirect: set[str]
) -> route_pb2.RouteConfiguration:
    vhosts = [
        rc.VirtualHost(
            name=f"{h}:{port}",
            domains=["*"] if h == "*" else [h, f"{h}:*"],
            routes=routes,
            include_request_attempt_count=True,
            retry_policy=default_retry_policy(),
            require_tls=rc.VirtualHost.ALL if h in redirect else rc.VirtualHost.NONE,
        )
        for h, routes in sorted(hosts_routes.items())
    ]
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=vhosts, validate_clusters={"value": False})
