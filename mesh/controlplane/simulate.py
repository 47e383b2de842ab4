"""Offline "which cluster would this request hit?" over the translated route configs (like Istio's
pilot/pkg/simulation): proves translation without starting Envoy, and explains routing to users."""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2

from mesh.api.config import MeshConfig
from mesh.controlplane.translate import tcp
from mesh.controlplane.translate.authz import NETWORK_RBAC_FILTER, RBAC_FILTER
from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.gateway import gateway_route_name
from mesh.controlplane.translate.listeners import inbound_listeners
from mesh.controlplane.translate.protos import packed
from mesh.controlplane.translate.routes import SIDECAR_ROUTE_CONFIG, build_routes
from mesh.errors import UsageError
from mesh.istio.protocol import is_http_port
from mesh.runtime import Pod, Proxy, gateway_proxy, pods_for, sidecar_for

GATEWAY_PORT = 80  # the simulated ingress gateway serves its HTTP port here


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


# --- a request through a whole mesh, offline --------------------------------------------------------------


# --- the destination's RBAC filters, evaluated as Envoy evaluates them -------------------------------------


@dataclass(frozen=True)
class Peer:
    """What the destination's RBAC filters see of a request: the caller's mTLS identity (None: plaintext), its
    address, and the request itself (headers lower-cased, pseudo-headers included)."""

    principal: str | None
    ip: str
    port: int
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Decision:
    """The RBAC verdict at one destination workload: which policy (Envoy's `ns[..]-policy[..]-rule[..]` name) decided."""

    workload: str
    allowed: bool
    policy: str | None  # None: no policy matched (allowed: no ALLOW policy; denied: ALLOW policies matched nothing)
    reason: str


def _cidr_contains(cidr: address_pb2.CidrRange, ip: str) -> bool:
    net = ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}", strict=False)
    return ipaddress.ip_address(ip) in net


def _header_matches(m: rc.HeaderMatcher, headers: dict[str, str]) -> bool:
    value = headers.get(m.name.lower())
    kind = m.WhichOneof("header_match_specifier")
    if kind == "present_match":
        ok = (value is not None) == m.present_match
    else:
        ok = value is not None and _string_match(m.string_match, value)
    return bool(ok != m.invert_match)


def _principal_matches(p: rbac_pb2.Principal, peer: Peer) -> bool:
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return bool(p.any)
    if kind == "authenticated":  # an empty matcher matches any authenticated peer, none matches plaintext
        if peer.principal is None:
            return False
        return not p.authenticated.HasField("principal_name") or _string_match(
            p.authenticated.principal_name, peer.principal
        )
    if kind == "and_ids":
        return all(_principal_matches(q, peer) for q in p.and_ids.ids)
    if kind == "or_ids":
        return any(_principal_matches(q, peer) for q in p.or_ids.ids)
    if kind == "not_id":
        return not _principal_matches(p.not_id, peer)
    if kind in ("direct_remote_ip", "remote_ip", "source_ip"):
        return _cidr_contains(getattr(p, kind), peer.ip)
    if kind == "header":
        return _header_matches(p.header, peer.headers)
    raise NotImplementedError(f"RBAC principal {kind!r} is not simulated")


def _permission_matches(p: rbac_pb2.Permission, peer: Peer) -> bool:
    kind = p.WhichOneof("rule")
    if kind == "any":
        return bool(p.any)
    if kind == "and_rules":
        return all(_permission_matches(q, peer) for q in p.and_rules.rules)
    if kind == "or_rules":
        return any(_permission_matches(q, peer) for q in p.or_rules.rules)
    if kind == "not_rule":
        return not _permission_matches(p.not_rule, peer)
    if kind == "header":
        return _header_matches(p.header, peer.headers)
    if kind == "url_path":  # Envoy matches the path without its query string
        return _string_match(p.url_path.path, peer.path.partition("?")[0])
    if kind == "destination_port":
        return bool(p.destination_port == peer.port)
    raise NotImplementedError(f"RBAC permission {kind!r} is not simulated")


def _matching_policy(rbac: rbac_pb2.RBAC, peer: Peer) -> str | None:
    """The first policy (by name, as Envoy sorts them) whose permissions and principals both match."""
    for name in sorted(rbac.policies):
        pol = rbac.policies[name]
        if any(_permission_matches(x, peer) for x in pol.permissions) and any(
            _principal_matches(x, peer) for x in pol.principals
        ):
            return str(name)
    return None


def authorize(filters: list[hcm.HttpFilter], peer: Peer, workload: str) -> Decision:
    """Run the inbound chain's RBAC filters in order (DENY before ALLOW): the first to deny decides."""
    allowed_by: str | None = None
    for f in filters:
        if not f.name.startswith(RBAC_FILTER):
            continue
        config = rbac_filter.RBAC()
        f.typed_config.Unpack(config)
        match = _matching_policy(config.rules, peer)
        if config.rules.action == rbac_pb2.RBAC.DENY and match is not None:
            return Decision(workload, False, match, f"denied by DENY policy {match}")
        if config.rules.action == rbac_pb2.RBAC.ALLOW:
            if match is None:
                return Decision(workload, False, None, "denied: no ALLOW policy matches")
            allowed_by = match
    if allowed_by is not None:
        return Decision(workload, True, allowed_by, f"allowed by ALLOW policy {allowed_by}")
    return Decision(workload, True, None, "allowed: no authorization policy applies")


def _inbound_filters(push: PushContext, pod: Pod, port: int, mtls: bool) -> list[hcm.HttpFilter] | None:
    """The HTTP filters of the destination listener's chain for this transport (None: no chain accepts it)."""
    chain_name = f"inbound_{port}_{'mtls' if mtls else 'plaintext'}"
    for listener in inbound_listeners(push, sidecar_for(pod)):
        for chain in listener.filter_chains:
            if chain.name != chain_name:
                continue
            m = hcm.HttpConnectionManager()
            if chain.filters[0].typed_config.Unpack(m):
                return list(m.http_filters)
            return [_as_http_rbac(f) for f in chain.filters if f.name.startswith(NETWORK_RBAC_FILTER)]  # a TCP port
    return None


def _as_http_rbac(f: lc.Filter) -> hcm.HttpFilter:
    """A TCP chain's network RBAC in the form `authorize` reads (the rules are the same)."""
    net = network_rbac.RBAC()
    f.typed_config.Unpack(net)
    suffix = f.name.removeprefix(NETWORK_RBAC_FILTER)
    return hcm.HttpFilter(name=RBAC_FILTER + suffix, typed_config=packed(rbac_filter.RBAC(rules=net.rules)))


def _decide(push: PushContext, proxy: Proxy, cluster: str, path: str, headers: dict[str, str]) -> Decision | None:
    """The RBAC decision at the first pod behind an outbound cluster (`outbound|port|subset|fqdn`)."""
    parts = cluster.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    port, subset, fqdn = int(parts[1]), parts[2], parts[3]
    view = push.service(fqdn, proxy.namespace)
    if view is None:
        return None
    sub = push.subset(view.fqdn, subset, proxy.namespace) if subset else None
    pods = push.pods_for(view, sub.labels if sub else None)
    if not pods:
        return None
    pod = pods[0]
    target = next((p for p in pod.ports if p.number == port), None)
    if target is None:
        return None
    mtls = push.upstream_tls(view, port, subset, proxy.namespace) == "ISTIO_MUTUAL"
    filters = _inbound_filters(push, pod, target.number, mtls)
    workload = f"{pod.name}.{pod.namespace}"
    if filters is None:
        mode = push.mtls_mode(pod, port)
        return Decision(
            workload,
            False,
            None,
            f"rejected: port {port} is {mode} and the caller sends {'mTLS' if mtls else 'plaintext'}",
        )
    peer = Peer(proxy.identity if mtls else None, proxy.ip, port, path, headers)
    return authorize(filters, peer, workload)


@dataclass(frozen=True)
class Simulation:
    """Where one request goes: from which proxy, through which route table, to which route (None: a 404), and
    what each destination's RBAC filters decide."""

    proxy: Proxy
    method: str
    host: str
    path: str
    table: route_pb2.RouteConfiguration | None
    hit: Hit | None
    decisions: dict[str, Decision] = field(default_factory=dict)  # cluster -> decision at its first pod


def _pods(config: MeshConfig) -> list[Pod]:
    counter = itertools.count(1)
    return [p for s in config.services for p in pods_for(s, lambda: (f"10.0.0.{next(counter)}", "10.0.1.1"))]


def _proxy(source: str, pods: list[Pod]) -> Proxy:
    """`gateway` (the ingress) or a pod, by pod name or service name, each optionally `.namespace`."""
    if source == "gateway":
        return gateway_proxy("10.0.0.254", {GATEWAY_PORT: ("0.0.0.0", GATEWAY_PORT)})
    pod = next(
        (p for p in pods if source in (p.name, p.service, f"{p.name}.{p.namespace}", f"{p.service}.{p.namespace}")),
        None,
    )
    if pod is None:
        raise UsageError(f"no pod {source!r}", hint=f"pods: {', '.join(p.name for p in pods)}")
    return sidecar_for(pod)


def _tcp_hit(push: PushContext, proxy: Proxy, hostname: str, port: int | None) -> Hit | None:
    """A sidecar's connection to a TCP-family service port: the `tcp` rule (or the service) its listener picks.
    TLS routes by SNI are not simulated (the connection is taken as having no SNI they match)."""
    view = push.service(hostname, proxy.namespace) if port and proxy.kind == "sidecar" else None
    service_port = view.service.port(port) if view and port else None
    if view is None or port is None or service_port is None or is_http_port(service_port):
        return None
    dest = tcp.sidecar_tcp_destinations(push, proxy, view, port)
    return Hit(virtual_host=f"{view.fqdn}:{port}", route="tcp_proxy", clusters=dict(dest.clusters))


def simulate(config: MeshConfig, source: str, url: str, headers: dict[str, str], method: str = "GET") -> Simulation:
    """Translate `config` for the proxy at `source` and follow the request through its HTTP route table."""
    pods = _pods(config)
    proxy = _proxy(source, pods)
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.netloc or parts.path.split("/")[0]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    push = PushContext(config, pods)
    connection = _tcp_hit(push, proxy, parts.hostname or "", parts.port)
    if connection is not None:  # a TCP-family service port: routed as a connection, not a request
        at_pods = {c: d for c in connection.clusters if (d := _decide(push, proxy, c, "", {})) is not None}
        return Simulation(proxy, "TCP", host, "", None, connection, at_pods)
    tables = build_routes(push, proxy)
    http_tables = (SIDECAR_ROUTE_CONFIG, gateway_route_name(GATEWAY_PORT))
    table = next((t for t in tables if t.name in http_tables), tables[0] if tables else None)
    request = {k.strip(): v.strip() for k, v in headers.items()}
    hit = route(table, host, path, request, method) if table else None
    decisions: dict[str, Decision] = {}
    if hit is not None and not hit.redirect:
        seen = {k.lower(): v for k, v in request.items()} | {":method": method, ":authority": host, ":path": path}
        for cluster in hit.clusters:
            decision = _decide(push, proxy, cluster, path, seen)
            if decision is not None:
                decisions[cluster] = decision
    return Simulation(proxy, method, host, path, table, hit, decisions)


def explain(sim: Simulation) -> list[str]:
    """The simulation as lines for people: route table, virtual host, route, clusters, timeout, retries, filters."""
    request = f"{sim.method} {sim.host}{sim.path} from {sim.proxy.short}"
    if sim.hit is None:
        return [f"{request}: no route matches — Envoy answers 404"]
    if sim.hit.route_proto is None:  # a TCP connection (tcp_proxy)
        lines = [
            f"TCP connection to {sim.host} from {sim.proxy.short}",
            f"  listener:     {sim.hit.virtual_host} (tcp_proxy)",
        ]
        lines += [
            f"  cluster:      {c}" + (f"  (weight {w})" if len(sim.hit.clusters) > 1 else "")
            for c, w in sim.hit.clusters.items()
        ]
        lines += [f"  rbac:         {d.reason} at {d.workload}" for d in sim.decisions.values()]
        return lines
    hit, r = sim.hit, sim.hit.route_proto
    assert r is not None
    lines = [
        request,
        f"  route table:  {sim.table.name if sim.table else '-'}",
        f"  virtual host: {hit.virtual_host}",
        f"  route:        {hit.route}",
    ]
    if hit.redirect:
        lines.append(f"  redirect:     {r.redirect}")
    for cluster, weight in hit.clusters.items():
        lines.append(f"  cluster:      {cluster}" + (f"  (weight {weight})" if len(hit.clusters) > 1 else ""))
    action = r.route
    if action.timeout.seconds or action.timeout.nanos:
        lines.append(f"  timeout:      {action.timeout.seconds + action.timeout.nanos / 1e9:g}s")
    if hit.retry is not None:
        rp = hit.retry
        per_try = rp.per_try_timeout.seconds + rp.per_try_timeout.nanos / 1e9
        lines.append(
            f"  retries:      {rp.num_retries.value}"
            + (f" on {rp.retry_on}" if rp.retry_on else "")
            + (f", per-try timeout {per_try:g}s" if per_try else "")
        )
    lines += _faults(r)
    if r.typed_per_filter_config:
        lines.append(f"  filters:      {', '.join(sorted(r.typed_per_filter_config))}")
    for cluster, d in sim.decisions.items():
        at = f" (for {cluster})" if len(sim.decisions) > 1 else ""
        lines.append(f"  rbac:         {d.reason} at {d.workload}{at}")
    return lines


def _percent(p: percent_pb2.FractionalPercent) -> str:
    scale = {0: 100, 1: 10_000, 2: 1_000_000}[p.denominator]
    return f"{p.numerator * 100 / scale:g}%"


def _faults(r: rc.Route) -> list[str]:
    """The route's fault injection with its values: what `delay`/`abort` a request may meet, and how often."""
    packed = r.typed_per_filter_config.get("envoy.filters.http.fault")
    if packed is None:
        return []
    fault = fault_pb2.HTTPFault()
    if not packed.Unpack(fault):
        return []
    lines = []
    if fault.HasField("delay"):
        d = fault.delay.fixed_delay
        lines.append(
            f"  fault delay:  {d.seconds + d.nanos / 1e9:g}s for {_percent(fault.delay.percentage)} of requests"
        )
    if fault.HasField("abort"):
        lines.append(
            f"  fault abort:  HTTP {fault.abort.http_status} for {_percent(fault.abort.percentage)} of requests"
        )
    return lines
