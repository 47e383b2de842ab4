"""One VirtualService HTTP rule -> Envoy routes (Istio's route/route.go): match, action, headers, fault, CORS.

Each function returns the message it builds; the caller (sidecar or gateway assembly) decides where it goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from mesh.api._base import parse_duration
from mesh.api.networking import (
    CorsPolicy,
    Destination,
    Headers,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRoute,
    StringMatch,
    VirtualService,
)
from mesh.api.ratelimit import ROUTE_RATELIMIT_FILTER
from mesh.controlplane.translate.clusters import BLACKHOLE
from mesh.controlplane.translate.context import PushContext, outbound_cluster
from mesh.controlplane.translate.protos import duration, fraction, packed, u32
from mesh.controlplane.translate.ratelimit import route_rate_limit
from mesh.controlplane.translate.retry import retry_policy
from mesh.controlplane.translate.serviceentry import entry_cluster_for
from mesh.istio import FaultShare, destination_port, fault_share, gateway_ref
from mesh.runtime import Proxy

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
_REDIRECT_CODES = {301: 0, 302: 1, 303: 2, 307: 3, 308: 4}


@dataclass(frozen=True)
class RouteScope:
    """Where a VirtualService's rules are translated: for which proxy, on which port (the virtual host's, which a
    destination without a port defaults to), bound through which gateway."""

    push: PushContext
    vs: VirtualService
    proxy: Proxy
    port: int
    gateway: str


def translate_http(scope: RouteScope) -> list[rc.Route]:
    """Every http rule, one Envoy route per match clause (a rule without match matches everything)."""
    vs = scope.vs
    out: list[rc.Route] = []
    for i, rule in enumerate(vs.http):
        matches: list[HTTPMatchRequest | None] = list(rule.match) or [None]
        for m in matches:
            if m is not None and not _applies(m, scope):
                continue
            out.append(http_route(scope, rule, m, rule.name or f"{vs.namespace}.{vs.name}.{i}"))
            if m is None:
                break
    return out


def _applies(m: HTTPMatchRequest, scope: RouteScope) -> bool:
    if m.port is not None and m.port != scope.port:
        return False
    if m.source_labels and not m.source_labels.items() <= scope.proxy.labels.items():
        return False
    if m.source_namespace and m.source_namespace != scope.proxy.namespace:  # routes are per namespace already
        return False
    return not m.gateways or scope.gateway in {gateway_ref(g, scope.vs.namespace) for g in m.gateways}


def http_route(scope: RouteScope, rule: HTTPRoute, m: HTTPMatchRequest | None, name: str) -> rc.Route:
    """One Envoy route: a redirect or a forwarding action, then the rule's headers, fault and CORS."""
    route = rc.Route(name=name, match=route_match(m))
    if rule.redirect is not None:
        route.redirect.CopyFrom(redirect_action(rule.redirect))
    else:
        action, dest_headers = route_action(scope, rule)
        route.route.CopyFrom(action)
        if dest_headers is not None:
            _add_headers(route, dest_headers)
    if rule.headers:
        _add_headers(route, rule.headers)
    if rule.fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(packed(fault_filter(rule.fault)))
    if rule.cors_policy is not None:
        route.typed_per_filter_config[CORS_FILTER].CopyFrom(packed(cors_policy(rule.cors_policy)))
    limit = route_rate_limit(scope.push.rate_limits, scope.proxy, scope.vs, rule, m)  # a route-scoped RateLimit
    if limit is not None:
        route.typed_per_filter_config[ROUTE_RATELIMIT_FILTER].CopyFrom(packed(limit))
    return route


def _add_headers(route: rc.Route, headers: Headers) -> None:
    """Header operations onto a route this module is building (a destination's first, then the rule's)."""
    for field_name, options in header_fields(headers).items():
        getattr(route, field_name).extend(options)


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


def _cluster_for(scope: RouteScope, dest: Destination) -> str:
    """Istio's GetDestinationCluster: without a port, the service's only port or else the listener's port."""
    view = scope.push.service(dest.host, scope.vs.namespace)
    if view is None:  # a ServiceEntry host, or nothing the registry knows
        port = dest.port.number if dest.port else None
        entry = entry_cluster_for(scope.push, dest.host, port, dest.subset or "", scope.vs.namespace, scope.port)
        return entry or BLACKHOLE
    ports = [p.number for p in view.service.ports]
    number = destination_port(dest.port.number if dest.port else None, ports, scope.port)
    return outbound_cluster(number, dest.subset or "", view.fqdn)


def redirect_action(r: HTTPRedirect) -> rc.RedirectAction:
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
    return ra


def route_action(scope: RouteScope, rule: HTTPRoute) -> tuple[rc.RouteAction, Headers | None]:
    """The forwarding action, and the headers of a single destination (Envoy keeps those on the route)."""
    action = rc.RouteAction(timeout=duration(rule.timeout or 0.0))
    dests = [(d, _cluster_for(scope, d.destination)) for d in rule.route]
    single_headers: Headers | None = None
    if len(dests) == 1:
        action.cluster = dests[0][1]
        single_headers = dests[0][0].headers
    else:
        wc = rc.WeightedCluster(
            clusters=[
                rc.WeightedCluster.ClusterWeight(
                    name=cluster, weight=u32(d.weight), **(header_fields(d.headers) if d.headers else {})
                )
                for d, cluster in dests
                if d.weight  # Istio drops weight-0 destinations
            ]
        )
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
        mp = rc.RouteAction.RequestMirrorPolicy(cluster=_cluster_for(scope, rule.mirror))
        pct = rule.mirror_percentage.value if rule.mirror_percentage else 100.0
        mp.runtime_fraction.default_value.CopyFrom(fraction(pct))
        action.request_mirror_policies.append(mp)
    hp = hash_policy(scope, rule)
    if hp is not None:
        action.hash_policy.append(hp)
    return action, single_headers


def hash_policy(scope: RouteScope, rule: HTTPRoute) -> rc.RouteAction.HashPolicy | None:
    """consistentHash lives on the DestinationRule but Envoy reads the hash key on the route."""
    if not rule.route:
        return None
    d = rule.route[0].destination
    view = scope.push.service(d.host, scope.vs.namespace)
    if view is None:
        return None
    tp = scope.push.traffic_policy(view.fqdn, d.port.number if d.port else 0, d.subset or "", scope.proxy.namespace)
    ch = tp.load_balancer.consistent_hash if tp.load_balancer else None
    if ch is None:
        return None
    hp = rc.RouteAction.HashPolicy()
    if ch.http_header_name:
        hp.header.header_name = ch.http_header_name
    elif ch.use_source_ip:
        hp.connection_properties.source_ip = True
    elif ch.http_query_parameter_name:
        hp.query_parameter.name = ch.http_query_parameter_name
    else:
        return None
    return hp


def _header_option(k: str, v: str, action: Any) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v), append_action=action)


def header_fields(headers: Headers) -> dict[str, list[Any]]:
    """Header operations as the Route/ClusterWeight fields they fill: set, then add, then remove."""
    out: dict[str, list[Any]] = {}
    for ops, side in ((headers.request, "request"), (headers.response, "response")):
        if ops is None:
            continue
        add = out.setdefault(f"{side}_headers_to_add", [])
        add += [
            _header_option(k, v, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
            for k, v in sorted(ops.set.items())
        ]
        add += [
            _header_option(k, v, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD) for k, v in sorted(ops.add.items())
        ]
        out.setdefault(f"{side}_headers_to_remove", []).extend(ops.remove)
    return out


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
    """Istio's TranslateFault: percentages as `mesh.istio.fault_share` says (none set: the fault never fires)."""
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        d = fault.delay
        delay = common_fault.FaultDelay(fixed_delay=duration(d.fixed_delay))
        share = fault_share(d)
        if share is not None:
            delay.percentage.CopyFrom(_fraction(share))
        out.delay.CopyFrom(delay)
    if fault.abort is not None:
        a = fault.abort
        abort = fault_pb2.FaultAbort()
        share = fault_share(a)
        if share is not None:
            abort.percentage.CopyFrom(_fraction(share))
        if a.http_status is not None:
            abort.http_status = a.http_status
        else:
            abort.grpc_status = _GRPC_CODES.get((a.grpc_status or "").upper(), 14)
        out.abort.CopyFrom(abort)
    return out


def _fraction(share: FaultShare) -> percent_pb2.FractionalPercent:
    if share.legacy:
        return percent_pb2.FractionalPercent(
            numerator=int(share.percent), denominator=percent_pb2.FractionalPercent.HUNDRED
        )
    return fraction(share.percent)


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
