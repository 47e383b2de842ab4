"""RDS per proxy (Istio's httproute.go): sidecars get one route config, `http_proxy` (Istio's name for the
HTTP-proxy capture mode), with a virtual host per service port; gateways get theirs from `gateway.py`.

One rule's translation is `route.py`; retries are `retry.py`.
"""

from __future__ import annotations

import re

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from mesh.controlplane.translate.context import (
    PushContext,
    ServiceView,
    outbound_cluster,
    pod_cluster,
    routes_by_original_destination,
    routes_pods_by_name,
)
from mesh.controlplane.translate.gateway import gateway_routes
from mesh.controlplane.translate.protos import duration
from mesh.controlplane.translate.retry import default_retry_policy
from mesh.controlplane.translate.route import RouteScope, translate_http
from mesh.istio import MESH_GATEWAY
from mesh.runtime import Proxy, pod_dns_names

SIDECAR_ROUTE_CONFIG = "http_proxy"


def build_routes(push: PushContext, proxy: Proxy) -> list[route_pb2.RouteConfiguration]:
    if proxy.kind == "sidecar":
        return [sidecar_routes(push, proxy)]
    return gateway_routes(push, proxy)


def sidecar_routes(
    push: PushContext, proxy: Proxy, vhosts: list[rc.VirtualHost] | None = None
) -> route_pb2.RouteConfiguration:
    """`http_proxy`: a virtual host per service port the proxy's Sidecar scope shows it (`vhosts` when the caller
    reused them from the memo)."""
    if vhosts is None:
        scope = push.proxy_scope(proxy)
        vhosts = [
            service_vhost(push, proxy, push.services[fqdn], port)
            for fqdn, ports in scope.vhost_ports.items()
            for port in ports
        ]
    return route_pb2.RouteConfiguration(
        name=SIDECAR_ROUTE_CONFIG, virtual_hosts=vhosts, validate_clusters={"value": False}
    )


def _domains(view: ServiceView, port: int, client_ns: str, pods_by_name: bool = False) -> list[str]:
    svc = view.service
    names = [view.fqdn, f"{svc.name}.{svc.namespace}.svc", f"{svc.name}.{svc.namespace}"]
    if svc.namespace == client_ns:
        names.append(svc.name)
    if pods_by_name:  # Istio's wildcard for headless services: `<pod>.<service>...` reaches the same routes
        names += [f"*.{n}" for n in names]
    out = [f"{n}:{port}" for n in names]
    if port == 80:
        out += names
    return out


def service_vhost(push: PushContext, proxy: Proxy, view: ServiceView, port: int) -> rc.VirtualHost:
    # Istio: one VirtualService per host on the mesh (IST0109 flags the rest), among those the Sidecar selects
    vs = push.proxy_scope(proxy).virtual_services.get(view.fqdn)
    if vs is not None:
        routes = translate_http(RouteScope(push, vs, proxy, port, MESH_GATEWAY))
    else:
        routes = [_default_route(view, port)]
    domains = _domains(view, port, proxy.namespace, routes_by_original_destination(push, view))
    if routes_pods_by_name(push, view):
        pods = _pod_routes(view, port, proxy.namespace)
        routes = [route for route, _ in pods] + list(routes)
        domains += [d for _, names in pods for d in names]
    return rc.VirtualHost(
        name=f"{view.fqdn}:{port}",
        domains=domains,
        routes=routes,
        include_request_attempt_count=True,  # as Istio sets it: upstreams see x-envoy-attempt-count
        # Istio's default retries, once per virtual host instead of on every route (same behaviour: a route's
        # own policy replaces it); this keeps large route tables ~60% smaller
        retry_policy=default_retry_policy(),
    )


def _pod_routes(view: ServiceView, port: int, client_ns: str) -> list[tuple[rc.Route, list[str]]]:
    """Per pod of a headless service: a route choosing it by Host (any of its names) and those names as domains."""
    out = []
    for pod in view.pods:
        names = pod_dns_names(pod, client_ns)
        hosts = "|".join(re.escape(n) for n in names)
        authority = rc.HeaderMatcher(
            name=":authority",
            string_match=string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=f"^(?i:{hosts})(?::{port})?$")
            ),
        )
        route = rc.Route(
            name=pod.name,
            match=rc.RouteMatch(prefix="/", headers=[authority]),
            route=rc.RouteAction(cluster=pod_cluster(port, pod, view), timeout=duration(0.0)),
        )
        out.append((route, [f"{n}:{port}" for n in names] + (names if port == 80 else [])))
    return out


def _default_route(view: ServiceView, port: int) -> rc.Route:
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(cluster=outbound_cluster(port, "", view.fqdn), timeout=duration(0.0)),
    )
