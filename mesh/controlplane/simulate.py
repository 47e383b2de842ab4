"""Offline "which cluster would this request hit?" over the translated route configs (like Istio's
pilot/pkg/simulation): proves translation without starting Envoy, and explains routing to users."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2


@dataclass
class Hit:
    virtual_host: str
    route: str
    clusters: dict[str, int] = field(default_factory=dict)  # cluster -> weight (single cluster: 100)
    redirect: bool = False
    route_proto: rc.Route | None = None
    retry: rc.RetryPolicy | None = None  # the route's own, else its virtual host's


def _string_match(m: string_pb2.StringMatcher, value: str) -> bool:
    kind = m.WhichOneof("match_pattern")
    v = value.lower() if m.ignore_case else value
    if kind == "exact":
        return bool(v == (m.exact.lower() if m.ignore_case else m.exact))
    if kind == "prefix":
        return bool(v.startswith(m.prefix.lower() if m.ignore_case else m.prefix))
    if kind == "suffix":
        return bool(v.endswith(m.suffix.lower() if m.ignore_case else m.suffix))
    if kind == "contains":
        return bool(m.contains in v)
    if kind == "safe_regex":
        return re.fullmatch(m.safe_regex.regex, value) is not None
    return False


def _domain_matches(domain: str, host: str) -> bool:
    return domain == "*" or fnmatch.fnmatchcase(host, domain)


def _vhost(config: route_pb2.RouteConfiguration, host: str) -> rc.VirtualHost | None:
    # Envoy: exact domain first, then the longest wildcard, then "*".
    for vh in config.virtual_hosts:
        if host in vh.domains:
            return vh
    wild = [
        (len(d), vh)
        for vh in config.virtual_hosts
        for d in vh.domains
        if d != "*" and "*" in d and _domain_matches(d, host)
    ]
    if wild:
        return max(wild, key=lambda t: t[0])[1]
    return next((vh for vh in config.virtual_hosts if "*" in vh.domains), None)


def _route_matches(m: rc.RouteMatch, path: str, headers: dict[str, str]) -> bool:
    p, _, query = path.partition("?")
    case = m.case_sensitive.value if m.HasField("case_sensitive") else True
    kind = m.WhichOneof("path_specifier")
    cmp_p = p if case else p.lower()
    if kind == "prefix" and not cmp_p.startswith(m.prefix if case else m.prefix.lower()):
        return False
    if kind == "path" and cmp_p != (m.path if case else m.path.lower()):
        return False
    if kind == "safe_regex" and re.fullmatch(m.safe_regex.regex, p) is None:
        return False
    for hm in m.headers:
        value = headers.get(hm.name)
        ok = value is not None and _string_match(hm.string_match, value)
        if ok == hm.invert_match:
            return False
    params = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
    for qm in m.query_parameters:
        if qm.name not in params or not _string_match(qm.string_match, params[qm.name]):
            return False
    return True


def route(
    config: route_pb2.RouteConfiguration,
    host: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Hit | None:
    """The route Envoy would pick for this request, or None (Envoy answers 404)."""
    h = {k.lower(): v for k, v in (headers or {}).items()}
    h.setdefault(":method", method)
    h.setdefault(":authority", host)
    vh = _vhost(config, host)
    if vh is None:
        return None
    for r in vh.routes:
        if _route_matches(r.match, path, h):
            hit = Hit(virtual_host=vh.name, route=r.name, route_proto=r, redirect=r.HasField("redirect"))
            if r.route.HasField("retry_policy"):
                hit.retry = r.route.retry_policy
            elif vh.HasField("retry_policy"):
                hit.retry = vh.retry_policy
            if r.route.cluster:
                hit.clusters = {r.route.cluster: 100}
            else:
                hit.clusters = {c.name: c.weight.value for c in r.route.weighted_clusters.clusters}
            return hit
    return None
