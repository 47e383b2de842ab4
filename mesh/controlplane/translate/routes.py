"""RDS: VirtualService http rules -> Envoy routes, faithful to Istio's pilot/pkg/networking/core/route.

Sidecars get one route config, `http_proxy` (Istio's name for the HTTP-proxy capture mode), with a virtual host
per service port; gateways get `http.<port>` with a virtual host per VirtualService host they serve.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from functools import partial

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from mesh.analyze.analyzers.gateways import host_matches
from mesh.api._base import parse_duration
from mesh.api.networking import (
    CorsPolicy,
    Destination,
    Gateway,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    Server,
    StringMatch,
    VirtualService,
)
from mesh.controlplane.translate.clusters import BLACKHOLE
from mesh.controlplane.translate.context import PushContext, ServiceView, http_ports, outbound_cluster
from mesh.controlplane.translate.protos import duration, fraction, packed, u32
from mesh.runtime import Proxy

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
SIDECAR_ROUTE_CONFIG = "http_proxy"
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_REDIRECT_CODES = {301: 0, 302: 1, 303: 2, 307: 3, 308: 4}


def gateway_route_name(port: int) -> str:
    return f"http.{port}"


def build_routes(push: PushContext, proxy: Proxy) -> list[route_pb2.RouteConfiguration]:
    if proxy.kind == "sidecar":
        return [sidecar_routes(push, proxy)]
    return gateway_routes(push, proxy)


# --- sidecar ----------------------------------------------------------------------------------------


def _uses_source_labels(push: PushContext) -> bool:
    if "_uses_source_labels" not in push.__dict__:
        push.__dict__["_uses_source_labels"] = any(
            m.source_labels for vs in push._virtual_services for r in vs.http for m in r.match
        )
    return bool(push.__dict__["_uses_source_labels"])


def sidecar_routes_key(push: PushContext, proxy: Proxy) -> tuple[object, ...]:
    """Sidecars with equal keys get identical routes: per namespace, unless a rule matches the caller's labels."""
    return (proxy.namespace, tuple(sorted(proxy.labels.items())) if _uses_source_labels(push) else ())


def sidecar_vhost_keys(push: PushContext, proxy: Proxy) -> list[tuple[Hashable, ServiceView, int]]:
    """One key per virtual host: its inputs' content. Unchanged keys reuse last push's translation."""
    base = sidecar_routes_key(push, proxy)
    out: list[tuple[Hashable, ServiceView, int]] = []
    for view in push.services.values():
        vss = tuple(push.digest(vs) for vs in push.mesh_virtual_services.get(view.fqdn, [])[:1])
        for port in http_ports(view.service):
            out.append((("vh", view.fqdn, port.number, base, vss, push.world_digest), view, port.number))
    return out


def sidecar_routes(
    push: PushContext, proxy: Proxy, keys: list[tuple[Hashable, ServiceView, int]] | None = None
) -> route_pb2.RouteConfiguration:
    vhosts: list[rc.VirtualHost] = []
    for key, view, port in keys if keys is not None else sidecar_vhost_keys(push, proxy):
        vhosts.append(push.cached(key, partial(_service_vhost, push, proxy, view, port)))
    return route_pb2.RouteConfiguration(
        name=SIDECAR_ROUTE_CONFIG, virtual_hosts=vhosts, validate_clusters={"value": False}
    )


def _domains(view: ServiceView, port: int, client_ns: str) -> list[str]:
    svc = view.service
    names = [view.fqdn, f"{svc.name}.{svc.namespace}.svc", f"{svc.name}.{svc.namespace}"]
    if svc.namespace == client_ns:
        names.append(svc.name)
    out = [f"{n}:{port}" for n in names]
    if port == 80:
        out += names
    return out


def _service_vhost(push: PushContext, proxy: Proxy, view: ServiceView, port: int) -> rc.VirtualHost:
    vss = push.mesh_virtual_services.get(view.fqdn, [])
    routes: list[rc.Route] = []
    for vs in vss[:1]:  # Istio: one VirtualService per host on the mesh (IST0109 flags the rest)
        routes += translate_http(push, vs, proxy, port=port, gateway="mesh", default_host=view)
    if not vss:
        routes.append(_default_route(view, port))
    return rc.VirtualHost(
        name=f"{view.fqdn}:{port}",
        domains=_domains(view, port, proxy.namespace),
        routes=routes,
        include_request_attempt_count=True,  # as Istio sets it: upstreams see x-envoy-attempt-count
        # Istio's default retries, once per virtual host instead of on every route (same behaviour: a route's
        # own policy replaces it); this keeps large route tables ~60% smaller
        retry_policy=default_retry_policy(),
    )


def _default_route(view: ServiceView, port: int) -> rc.Route:
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(cluster=outbound_cluster(port, "", view.fqdn), timeout=duration(0.0)),
    )


# --- gateway ----------------------------------------------------------------------------------------


def terminates_tls(server: Server) -> bool:
    return server.port.protocol == "HTTPS" and server.tls is not None and server.tls.mode in ("SIMPLE", "MUTUAL")


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
        for vs, hosts in push.gateway_virtual_services(gw):
            visible = server_hosts(server, gw.namespace, vs.namespace)
            served = [h for h in hosts if any(host_matches(p, h) for p in visible)]
            if not served:
                continue
            rules = translate_http(push, vs, proxy, port=port, gateway=f"{gw.namespace}/{gw.name}", default_host=None)
            for h in served:
                hosts_routes.setdefault(h, []).extend(rules)
                if server.tls is not None and server.tls.https_redirect:
                    redirect.add(h)
    out = []
    for name, (port, hosts_routes, redirect) in sorted(tables.items()):
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
        out.append(route_pb2.RouteConfiguration(name=name, virtual_hosts=vhosts, validate_clusters={"value": False}))
    return out


def server_hosts(server: Server, gw_namespace: str, vs_namespace: str) -> list[str]:
    """A server's hosts visible to a VirtualService namespace (`ns/host`, `*/host`, `./host`)."""
    out = []
    for h in server.hosts:
        ns, sep, host = h.rpartition("/")
        if not sep or ns == "*" or (ns == "." and vs_namespace == gw_namespace) or ns == vs_namespace:
            out.append(host)
    return out


# --- one VirtualService -----------------------------------------------------------------------------


def translate_http(
    push: PushContext,
    vs: VirtualService,
    proxy: Proxy,
    *,
    port: int,
    gateway: str,
    default_host: ServiceView | None,
) -> list[rc.Route]:
    """Every http rule, one Envoy route per match clause (a rule without match matches everything)."""
    out: list[rc.Route] = []
    for i, rule in enumerate(vs.http):
        matches: list[HTTPMatchRequest | None] = list(rule.match) or [None]
        for m in matches:
            if m is not None and not _applies(m, proxy, port, gateway, vs.namespace):
                continue
            route = rc.Route(name=rule.name or f"{vs.namespace}.{vs.name}.{i}", match=route_match(m))
            _action(push, vs, rule, route, port, default_host, proxy.namespace)
            out.append(route)
            if m is None:
                break
    return out


def _applies(m: HTTPMatchRequest, proxy: Proxy, port: int, gateway: str, vs_namespace: str) -> bool:
    if m.port is not None and m.port != port:
        return False
    if m.source_labels and not m.source_labels.items() <= proxy.labels.items():
        return False
    if m.gateways:
        refs = {g if "/" in g or g == "mesh" else f"{vs_namespace}/{g}" for g in m.gateways}
        if gateway not in refs:
            return False
    return True


def string_matcher(sm: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if sm.exact is not None:
        return string_pb2.StringMatcher(exact=sm.exact, ignore_case=ignore_case)
    if sm.prefix is not None:
        return string_pb2.StringMatcher(prefix=sm.prefix, ignore_case=ignore_case)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=sm.regex or ""))


def route_match(m: HTTPMatchRequest | None) -> rc.RouteMatch:
    rm = rc.RouteMatch()
    if m is None or m.uri is None:
        rm.prefix = "/"
    elif m.uri.exact is not None:
        rm.path = m.uri.exact
    elif m.uri.prefix is not None:
        rm.prefix = m.uri.prefix
    else:
        rm.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.uri.regex or ""))
    if m is None:
        return rm
    if m.ignore_uri_case:
        rm.case_sensitive.value = False
    headers: list[rc.HeaderMatcher] = []
    for name, sm in sorted(m.headers.items()):
        headers.append(rc.HeaderMatcher(name=name.lower(), string_match=string_matcher(sm)))
    for name, sm in sorted(m.without_headers.items()):
        headers.append(rc.HeaderMatcher(name=name.lower(), string_match=string_matcher(sm), invert_match=True))
    for pseudo, pm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if pm is not None:
            headers.append(rc.HeaderMatcher(name=pseudo, string_match=string_matcher(pm)))
    rm.headers.extend(headers)
    for name, sm in sorted(m.query_params.items()):
        rm.query_parameters.append(rc.QueryParameterMatcher(name=name, string_match=string_matcher(sm)))
    return rm


def _cluster_for(push: PushContext, dest: Destination, vs_ns: str, port: int, default_host: ServiceView | None) -> str:
    view = push.service(dest.host, vs_ns)
    if view is None:
        return BLACKHOLE
    ports = [p.number for p in http_ports(view.service)]
    if dest.port is not None:
        number = dest.port.number
    elif default_host is not None and view.fqdn == default_host.fqdn and port in ports:
        number = port
    else:
        number = ports[0] if ports else port
    return outbound_cluster(number, dest.subset or "", view.fqdn)


def _action(
    push: PushContext,
    vs: VirtualService,
    rule: HTTPRoute,
    route: rc.Route,
    port: int,
    default_host: ServiceView | None,
    client_ns: str,
) -> None:
    if rule.redirect is not None:
        r = rule.redirect
        ra = rc.RedirectAction()
        if r.uri:
            ra.path_redirect = r.uri
        if r.authority:
            ra.host_redirect = r.authority
        if r.port:
            ra.port_redirect = r.port
        if r.scheme:
            ra.scheme_redirect = r.scheme
        ra.response_code = _REDIRECT_CODES.get(r.redirect_code or 301, 0)
        route.redirect.CopyFrom(ra)
    else:
        action = rc.RouteAction(timeout=duration(rule.timeout or 0.0))
        dests = [(d, _cluster_for(push, d.destination, vs.namespace, port, default_host)) for d in rule.route]
        if len(dests) == 1:
            action.cluster = dests[0][1]
            if dests[0][0].headers:
                _header_ops(route, dests[0][0].headers)
        else:
            wc = rc.WeightedCluster()
            for d, cluster in dests:
                if not d.weight:
                    continue  # Istio drops weight-0 destinations
                cw = rc.WeightedCluster.ClusterWeight(name=cluster, weight=u32(d.weight))
                if d.headers:
                    _header_ops(cw, d.headers)
                wc.clusters.append(cw)
            if len(wc.clusters) == 1 and not wc.clusters[0].request_headers_to_add:
                action.cluster = wc.clusters[0].name
            else:
                action.weighted_clusters.CopyFrom(wc)
        retry = retry_policy(rule.retries)
        if retry is not None:
            action.retry_policy.CopyFrom(retry)
        if rule.rewrite is not None:
            if rule.rewrite.uri is not None:
                action.prefix_rewrite = rule.rewrite.uri
            if rule.rewrite.authority:
                action.host_rewrite_literal = rule.rewrite.authority
        if rule.mirror is not None:
            mp = rc.RouteAction.RequestMirrorPolicy(cluster=_cluster_for(push, rule.mirror, vs.namespace, port, None))
            pct = rule.mirror_percentage.value if rule.mirror_percentage else 100.0
            mp.runtime_fraction.default_value.CopyFrom(fraction(pct))
            action.request_mirror_policies.append(mp)
        _hash_policy(push, action, rule, vs.namespace, client_ns)
        route.route.CopyFrom(action)
    if rule.headers:
        _header_ops(route, rule.headers)
    if rule.fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed(fault_filter(rule.fault)))
    if rule.cors_policy is not None:
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(packed(cors_policy(rule.cors_policy)))


def _hash_policy(push: PushContext, action: rc.RouteAction, rule: HTTPRoute, vs_ns: str, client_ns: str) -> None:
    """consistentHash lives on the DestinationRule but Envoy reads the hash key on the route."""
    for d in rule.route[:1]:
        view = push.service(d.destination.host, vs_ns)
        if view is None:
            return
        tp = push.traffic_policy(
            view.fqdn, d.destination.port.number if d.destination.port else 0, d.destination.subset or "", client_ns
        )
        ch = tp.load_balancer.consistent_hash if tp.load_balancer else None
        if ch is None:
            return
        hp = rc.RouteAction.HashPolicy()
        if ch.http_header_name:
            hp.header.header_name = ch.http_header_name
        elif ch.use_source_ip:
            hp.connection_properties.source_ip = True
        elif ch.http_query_parameter_name:
            hp.query_parameter.name = ch.http_query_parameter_name
        else:
            return
        action.hash_policy.append(hp)


def _header_ops(target: rc.Route | rc.WeightedCluster.ClusterWeight, headers: Headers) -> None:
    for ops, add, remove in (
        (headers.request, target.request_headers_to_add, target.request_headers_to_remove),
        (headers.response, target.response_headers_to_add, target.response_headers_to_remove),
    ):
        if ops is None:
            continue
        for k, v in sorted(ops.set.items()):
            add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=k, value=v),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
        for k, v in sorted(ops.add.items()):
            add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=k, value=v),
                    append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
                )
            )
        remove.extend(ops.remove)


def default_retry_policy() -> rc.RetryPolicy:
    """Istio's outbound default: 2 retries on connection-level failures, never the same host twice."""
    return rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=u32(2),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
    )


def retry_policy(retries: HTTPRetry | None) -> rc.RetryPolicy | None:
    """None inherits the virtual host's policy (Istio's default); `attempts: 0` is an explicit no-retry policy."""
    if retries is None:
        return None
    if retries.attempts == 0:
        return rc.RetryPolicy(num_retries=u32(0))
    p = default_retry_policy()
    p.num_retries.value = retries.attempts
    if retries.retry_on:
        words, codes = [], []
        for part in (s.strip() for s in retries.retry_on.split(",")):
            if part.isdigit():
                codes.append(int(part))
            elif part:
                words.append(part)
        if codes and "retriable-status-codes" not in words:
            words.append("retriable-status-codes")
        p.retry_on = ",".join(words)
        p.retriable_status_codes.extend(codes)
    if retries.per_try_timeout:
        p.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    return p


def cors_policy(cors: CorsPolicy) -> cors_pb2.CorsPolicy:
    """Istio's mapping: origins as string matchers, lists joined with commas, maxAge in whole seconds."""
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age:
        out.max_age = str(int(parse_duration(cors.max_age)))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out


def fault_filter(fault: HTTPFaultInjection) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        d = fault.delay
        out.delay.CopyFrom(
            common_fault.FaultDelay(fixed_delay=duration(d.fixed_delay), percentage=_percent(d.percentage, d.percent))
        )
    if fault.abort is not None:
        a = fault.abort
        abort = fault_pb2.FaultAbort(percentage=_percent(a.percentage, None))
        if a.http_status is not None:
            abort.http_status = a.http_status
        else:
            abort.grpc_status = _GRPC_CODES.get((a.grpc_status or "").upper(), 14)
        out.abort.CopyFrom(abort)
    return out


def _percent(percentage: object, legacy: int | None) -> percent_pb2.FractionalPercent:
    value = getattr(percentage, "value", None)
    if value is not None:
        return fraction(float(value))
    if legacy is not None:
        return percent_pb2.FractionalPercent(numerator=legacy, denominator=percent_pb2.FractionalPercent.HUNDRED)
    return fraction(100.0)


_GRPC_CODES: Mapping[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
