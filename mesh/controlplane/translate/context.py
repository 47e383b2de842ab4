"""PushContext: one immutable view of config + registry, indexed once and shared by every proxy's builders."""

from __future__ import annotations

import copy
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar

from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway, Subset, TrafficPolicy, VirtualService
from mesh.api.ratelimit import RateLimit
from mesh.api.security import AuthorizationPolicy, PeerAuthentication
from mesh.api.workloads import Service, ServicePort
from mesh.controlplane.translate.changes import ConfigChanges, Pair
from mesh.istio import (
    DEFAULT_MTLS_MODE,
    ROOT_NAMESPACE,
    SidecarIndex,
    SidecarScope,
    binds_gateway,
    export_scope,
    gateway_hosts,
    mtls_mode,
    pick_destination_rule,
    resolve_host,
    rule_host,
    served_hosts,
    virtual_service_visible,
)
from mesh.istio.protocol import is_http_port
from mesh.istio.routing import MeshRoutes
from mesh.istio.sidecar import route_destinations
from mesh.observability.envoyconfig import TelemetryOptions
from mesh.runtime import Pod, Proxy

Named = TypeVar("Named", VirtualService, DestinationRule)


def outbound_cluster(port: int, subset: str, fqdn: str) -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster(port: int) -> str:
    return f"inbound|{port}||"


def outbound_sni(port: int, subset: str, fqdn: str) -> str:
    return f"outbound_.{port}_.{subset}_.{fqdn}"


@dataclass(frozen=True)
class ServiceView:
    service: Service
    pods: tuple[Pod, ...]

    @property
    def fqdn(self) -> str:
        return self.service.fqdn


@dataclass(frozen=True)
class ProxyScope:
    """What one sidecar is configured with under its Sidecar resource (`mesh.istio.sidecar`): the services whose
    clusters and endpoints it gets, the service ports it gets a virtual host for, the VirtualService routing each
    host, and where unknown destinations go. Proxies of one namespace with equal `key`s share everything here
    (the VirtualServices follow their exportTo: the push keeps one unscoped ProxyScope per namespace when it matters)."""

    scope: SidecarScope
    services: dict[str, ServiceView]
    vhost_ports: dict[str, tuple[int, ...]]  # fqdn -> the HTTP ports with a virtual host
    virtual_services: dict[str, VirtualService]
    outbound_traffic_policy: str

    @property
    def key(self) -> tuple[str, str, str] | None:
        return self.scope.key


def _vhds_default() -> Literal["auto", "on", "off"]:
    value = os.environ.get("MESH_VHDS", "auto")
    if value not in ("auto", "on", "off"):
        from mesh.errors import UsageError

        raise UsageError(
            f"MESH_VHDS={value!r} is not a VHDS mode", hint="set MESH_VHDS to auto, on or off, or unset it"
        )
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class MeshOptions:
    """Mesh-wide settings (Istio keeps these in meshConfig)."""

    access_log: bool = False  # meshConfig.accessLogFile=/dev/stdout: every proxy logs each request to its log
    telemetry: TelemetryOptions | None = None  # metrics over ALS and tracing to the collector (--observability)
    # how apps reach their sidecar: HTTP_PROXY (`proxy`), or Istio's transparent capture (`iptables`, capture.py)
    interception: Literal["proxy", "iptables"] = "proxy"
    outbound_traffic_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"  # meshConfig.outboundTrafficPolicy
    # Istio's DNS proxying (ISTIO_META_DNS_CAPTURE, ISTIO_META_DNS_AUTO_ALLOCATE): each sidecar answers its pod's
    # DNS (`dns.py`) and ServiceEntries without addresses get one from 240.240.0.0/16
    dns_proxy: bool = False
    dns_auto_allocate: bool = False
    service_vips: tuple[tuple[str, str], ...] = ()  # (service fqdn, VIP) the pods' DNS answers with
    dns_upstream: str = ""  # `ip:port` where the DNS proxy sends names it does not know; "": answer NXDOMAIN
    # meshConfig.h2UpgradePolicy: UPGRADE sends every HTTP/1.1 port's sidecar-to-sidecar traffic over HTTP/2
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    # sidecar route tables' virtual hosts over VHDS (`vhds.py`): `auto` for tables of many hosts; MESH_VHDS sets the
    # default, like Istio's PILOT_* switches
    vhds: Literal["auto", "on", "off"] = field(default_factory=lambda: _vhds_default())


class PushContext:
    """Indexes over one config and the registry's pods, built once per push and read by every proxy's builders.

    It remembers nothing across pushes: the incremental-translation memo is `cache.PushCache`."""

    def __init__(
        self,
        config: MeshConfig,
        pods: Sequence[Pod],
        options: MeshOptions | None = None,
    ) -> None:
        self.config = config
        self.options = options or MeshOptions()
        self._modes: dict[tuple[str, int], str] = {}
        kinds: dict[str, list[Any]] = defaultdict(list)
        for r in config.resources:
            kinds[r.kind].append(r)
        self._peer_authentications: list[PeerAuthentication] = kinds["PeerAuthentication"]
        self._authz: list[AuthorizationPolicy] = sorted(
            kinds["AuthorizationPolicy"], key=lambda a: (a.namespace, a.name)
        )
        self._gateways: list[Gateway] = sorted(kinds["Gateway"], key=lambda g: (g.namespace, g.name))
        self._virtual_services: list[VirtualService] = sorted(
            kinds["VirtualService"], key=lambda v: (v.namespace, v.name)
        )
        self._destination_rules: list[DestinationRule] = sorted(
            kinds["DestinationRule"], key=lambda d: (d.namespace, d.name)
        )
        self._sidecars = SidecarIndex(kinds["Sidecar"])
        self._scopes: dict[tuple[tuple[str, str, str] | None, str], ProxyScope] = {}
        self._proxy_scopes: dict[str, ProxyScope] = {}
        # by id, holding the object (carried to the next push, an id may be reused once the object is gone)
        self._vs_hosts: dict[int, tuple[VirtualService, list[str]]] = {}
        self._vs_destinations: dict[int, tuple[VirtualService, set[str]]] = {}
        self._mesh_routes: dict[str, MeshRoutes] = {}  # by visibility namespace
        self._vs_features = Counter(f for vs in self._virtual_services for f in _features(vs))
        self.rate_limits: list[RateLimit] = kinds["RateLimit"]  # every proxy asks; scanning the config 50x cost ~15 ms
        by_service: dict[str, list[Pod]] = defaultdict(list)
        for p in pods:
            by_service[p.fqdn].append(p)
        self._policies: dict[tuple[str, int, str, str], TrafficPolicy] = {}
        self._chosen_rules: dict[tuple[str, str], DestinationRule | None] = {}
        self.services: dict[str, ServiceView] = {
            s.fqdn: ServiceView(s, tuple(by_service.get(s.fqdn, ())))
            for s in sorted(config.services, key=lambda s: s.fqdn)
        }

    @property
    def uses_cors(self) -> bool:
        """Whether any rule has a CORS policy: only then do HTTP chains carry the CORS filter (it costs ~3% per hop)."""
        return self._vs_features["cors"] > 0

    @property
    def uses_source_labels(self) -> bool:
        """Whether any rule matches the caller's labels: only then do sidecars of one namespace get different routes."""
        return self._vs_features["source_labels"] > 0

    @property
    def features(self) -> tuple[bool, bool, bool]:
        """The mesh-wide switches VirtualServices set (CORS filter, per-caller routes, per-namespace visibility):
        when one flips, every proxy's config changes."""
        return (self.uses_cors, self.uses_source_labels, self.exports_virtual_services)

    @property
    def destination_rules(self) -> list[DestinationRule]:
        """Every DestinationRule, by (namespace, name)."""
        return self._destination_rules

    # --- the next push ---------------------------------------------------------------------------------

    def updated(self, config: MeshConfig, changes: ConfigChanges) -> PushContext:
        """The context for `config`, which differs from this one's by `changes` alone (VirtualServices and
        DestinationRules): the indexes of unchanged kinds are carried over, the changed kinds' patched, and every
        Sidecar scope no change reaches is kept (Istio rebuilds only the changed kinds' indexes: push_context.go's
        initVirtualServices, initDestinationRules). `self` is not modified: a rejected push leaves it as it was."""
        new = copy.copy(self)
        new.config = config
        for name in ("_modes", "_scopes", "_proxy_scopes", "_vs_hosts", "_vs_destinations", "_policies"):
            setattr(new, name, dict(getattr(self, name)))  # filled lazily: each context its own
        if changes.virtual_services:
            new._update_virtual_services(changes.virtual_services)
            new._forget_scopes(changes)
        if changes.destination_rules:
            new._update_destination_rules(changes)
        return new

    def _update_virtual_services(self, pairs: Sequence[Pair]) -> None:
        before = [b for b, _ in pairs if b is not None]
        after = [a for _, a in pairs if a is not None]
        self._virtual_services = _replaced(self._virtual_services, pairs)
        self._vs_features = (self._vs_features - Counter(f for vs in before for f in _features(vs))) + Counter(
            f for vs in after for f in _features(vs)
        )
        self._mesh_routes = {
            ns: routes.replaced(_visible(before, ns), _visible(after, ns)) for ns, routes in self._mesh_routes.items()
        }
        gone = {id(vs) for vs in before}
        self._vs_hosts = {k: v for k, v in self._vs_hosts.items() if k not in gone}
        self._vs_destinations = {k: v for k, v in self._vs_destinations.items() if k not in gone}

    def _update_destination_rules(self, changes: ConfigChanges) -> None:
        pairs = changes.destination_rules
        self._destination_rules = _replaced(self._destination_rules, pairs)
        hosts = {rule_host(dr) for pair in pairs for dr in pair if dr is not None}
        if "_rules_by_host" in self.__dict__:  # computed by the previous push: patch the changed hosts' lists
            index = dict(self._rules_by_host)
            for host in hosts:
                index[host] = [dr for dr in self._destination_rules if rule_host(dr) == host]
            self.__dict__["_rules_by_host"] = defaultdict(list, {h: v for h, v in index.items() if v})
        self._policies = {k: v for k, v in self._policies.items() if k[0] not in hosts}

    def _forget_scopes(self, changes: ConfigChanges) -> None:
        """Forget the Sidecar scopes a VirtualService change reaches (the VirtualServices routing their hosts or
        the services their routes add may differ); the others stay the previous push's objects."""
        self._scopes = {k: s for k, s in self._scopes.items() if not changes.reaches(s.services)}
        kept = {id(s) for s in self._scopes.values()}
        self._proxy_scopes = {p: s for p, s in self._proxy_scopes.items() if id(s) in kept}

    # --- lookups ------------------------------------------------------------------------------------

    def service(self, host: str, namespace: str) -> ServiceView | None:
        return self.services.get(resolve_host(host, namespace))

    @cached_property
    def _rules_by_host(self) -> dict[str, list[DestinationRule]]:
        out: dict[str, list[DestinationRule]] = defaultdict(list)
        for dr in self._destination_rules:
            out[rule_host(dr)].append(dr)
        return out

    def destination_rule(self, fqdn: str, client_namespace: str) -> DestinationRule | None:
        """Istio's choice (`mesh.istio.pick_destination_rule`) among the rules indexed for the host."""
        return pick_destination_rule(
            self._rules_by_host.get(resolve_host(fqdn, client_namespace), []), client_namespace
        )

    def subset(self, fqdn: str, name: str, client_namespace: str) -> Subset | None:
        dr = self.destination_rule(fqdn, client_namespace)
        return next((s for s in dr.subsets if s.name == name), None) if dr else None

    def traffic_policy(self, fqdn: str, port: int, subset: str, client_namespace: str) -> TrafficPolicy:
        """Istio's merge: DR top-level, overridden by its port-level settings, overridden by the subset's."""
        key = (fqdn, port, subset, client_namespace)
        cached = self._policies.get(key)
        if cached is None:
            cached = self._policies[key] = self._traffic_policy(fqdn, port, subset, client_namespace)
        return cached

    def _traffic_policy(self, fqdn: str, port: int, subset: str, client_namespace: str) -> TrafficPolicy:
        dr = self.destination_rule(fqdn, client_namespace)
        if dr is None:
            return TrafficPolicy()
        layers: list[TrafficPolicy] = []
        if dr.traffic_policy:
            layers.append(dr.traffic_policy)
            layers += [
                TrafficPolicy.model_validate(pl.model_dump(exclude={"port"}))
                for pl in dr.traffic_policy.port_level_settings
                if pl.port.number == port
            ]
        sub = next((s for s in dr.subsets if s.name == subset), None) if subset else None
        if sub and sub.traffic_policy:
            layers.append(sub.traffic_policy)
            layers += [
                TrafficPolicy.model_validate(pl.model_dump(exclude={"port"}))
                for pl in sub.traffic_policy.port_level_settings
                if pl.port.number == port
            ]
        merged: dict[str, object] = {}
        for layer in layers:
            for f in ("load_balancer", "connection_pool", "outlier_detection", "tls"):
                v = getattr(layer, f)
                if v is not None:
                    merged[f] = v
        return TrafficPolicy.model_validate(merged)

    def pods_for(self, view: ServiceView, labels: dict[str, str] | None = None) -> list[Pod]:
        want = (labels or {}).items()
        return [p for p in view.pods if want <= p.labels.items()]

    def mtls_mode(self, pod: Pod, port: int) -> str:
        key = (pod.name + "." + pod.namespace, port)
        mode = self._modes.get(key)
        if mode is None:
            mode = self._modes[key] = self._mtls_mode(pod, port)
        return mode

    def _mtls_mode(self, pod: Pod, port: int) -> str:
        view = self.services.get(pod.fqdn)
        version = next((v for v in view.service.versions if v.name == pod.version), None) if view else None
        if view is None or version is None:
            return DEFAULT_MTLS_MODE
        return mtls_mode(self._peer_authentications, view.service.namespace, view.service.pod_labels(version), port)

    def upstream_tls(self, view: ServiceView, port: int, subset: str, client_namespace: str) -> str:
        """ISTIO_MUTUAL or DISABLE: the DR's explicit choice, else auto mTLS (plaintext only to DISABLE servers)."""
        tp = self.traffic_policy(view.fqdn, port, subset, client_namespace)
        if tp.tls is not None:
            return tp.tls.mode
        sub = self.subset(view.fqdn, subset, client_namespace) if subset else None
        pods = self.pods_for(view, sub.labels if sub else None)
        if pods and all(self.mtls_mode(p, port) == "DISABLE" for p in pods):
            return "DISABLE"
        return "ISTIO_MUTUAL"

    # --- VirtualServices ------------------------------------------------------------------------------

    @property
    def exports_virtual_services(self) -> bool:
        """Whether some VirtualService's exportTo hides it from some namespace: only then do the VirtualServices a
        proxy sees depend on its namespace (and do views and scopes get one entry per namespace)."""
        return self._vs_features["export"] > 0

    def visibility_namespace(self, namespace: str) -> str:
        """The part of a proxy's namespace its VirtualServices depend on: the namespace itself while some
        VirtualService is exported to fewer than all namespaces, else "" (every namespace sees the same)."""
        return namespace if self.exports_virtual_services else ""

    def virtual_services(self, namespace: str) -> list[VirtualService]:
        """The VirtualServices exported to `namespace` (`mesh.istio.virtual_service_visible`), by (namespace, name)."""
        if not self.exports_virtual_services:
            return self._virtual_services
        return [vs for vs in self._virtual_services if virtual_service_visible(vs, namespace)]

    def mesh_virtual_services(self, namespace: str) -> dict[str, list[VirtualService]]:
        """fqdn -> the mesh-bound VirtualServices visible to proxies of `namespace` claiming it, the one that routes
        it first (exact hosts, then the most specific wildcard: `mesh.istio.mesh_virtual_services`). Filtered
        before ranking, as Istio does: a VirtualService a namespace cannot see never shadows one it can."""
        key = self.visibility_namespace(namespace)
        found = self._mesh_routes.get(key)
        if found is None:
            found = self._mesh_routes[key] = MeshRoutes(self.virtual_services(key), self.services)
        return found.ranked

    def gateway_virtual_services(self, gw: Gateway, namespace: str) -> list[tuple[VirtualService, list[str]]]:
        """VirtualServices bound to `gw` and exported to `namespace` (the gateway proxy's: Istio filters by the
        proxy's namespace, not the Gateway resource's), each with the hosts of it that the gateway serves."""
        out = []
        for vs in self.virtual_services(namespace):
            if not binds_gateway(vs, gw):
                continue
            hosts = served_hosts(vs.hosts, gateway_hosts(gw, vs.namespace))
            if hosts:
                out.append((vs, hosts))
        return out

    def gateways_for(self, proxy: Proxy) -> list[Gateway]:
        return [g for g in self._gateways if g.selector and g.selector.items() <= proxy.labels.items()]

    # --- Sidecar scope --------------------------------------------------------------------------------

    def proxy_scope(self, proxy: Proxy) -> ProxyScope:
        """The proxy's Sidecar scope (computed once per Sidecar and namespace). Gateways are never scoped."""
        found = self._proxy_scopes.get(proxy.id)
        if found is not None:
            return found
        sidecar = self._sidecars.applicable(proxy.namespace, proxy.labels) if proxy.kind == "sidecar" else None
        scope = SidecarScope.of(sidecar, proxy.namespace)
        # the unscoped default's key is shared by every namespace, but its VirtualServices follow their exportTo
        key = (scope.key, self.visibility_namespace(proxy.namespace))
        cached = self._scopes.get(key)
        if cached is None:
            cached = self._scopes[key] = self._proxy_scope(scope)
        self._proxy_scopes[proxy.id] = cached
        return cached

    def _proxy_scope(self, scope: SidecarScope) -> ProxyScope:
        policy = scope.outbound_traffic_policy(self.options.outbound_traffic_policy)
        if scope.unscoped:
            every = {f: tuple(p.number for p in http_ports(v.service)) for f, v in self.services.items()}
            first = {f: vss[0] for f, vss in self.mesh_virtual_services(scope.namespace).items() if vss}
            return ProxyScope(scope, self.services, every, first, policy)
        vhost_ports: dict[str, tuple[int, ...]] = {}
        for fqdn in sorted(self._candidates(scope)):
            view = self.services[fqdn]
            ports = tuple(
                p.number
                for p in http_ports(view.service)
                if scope.selects_service(view.service.namespace, fqdn, p.number)
            )
            if ports:
                vhost_ports[fqdn] = ports
        routing = {
            f: next(
                (
                    vs
                    for vs in self.mesh_virtual_services(scope.namespace).get(f, [])
                    if scope.selects_virtual_service(vs, self._hosts(vs))
                ),
                None,
            )
            for f in vhost_ports
        }
        chosen = {f: vs for f, vs in routing.items() if vs is not None}
        wanted = set(vhost_ports).union(*(self._destinations(vs) for vs in chosen.values()))
        services = {f: self.services[f] for f in sorted(wanted & self.services.keys())}
        return ProxyScope(scope, services, vhost_ports, chosen, policy)

    def _hosts(self, vs: VirtualService) -> list[str]:
        """A VirtualService's hosts resolved in its namespace (once per push: every Sidecar scope asks)."""
        found = self._vs_hosts.get(id(vs))
        if found is None or found[0] is not vs:
            found = self._vs_hosts[id(vs)] = (vs, [resolve_host(h, vs.namespace) for h in vs.hosts])
        return found[1]

    def _destinations(self, vs: VirtualService) -> set[str]:
        found = self._vs_destinations.get(id(vs))
        if found is None or found[0] is not vs:
            found = self._vs_destinations[id(vs)] = (vs, route_destinations(vs))
        return found[1]

    def _candidates(self, scope: SidecarScope) -> set[str]:
        """Services an egress host may select, looked up by name or namespace instead of testing every service
        against every Sidecar (50 Sidecars x 1,000 services cost ~100 ms a push that way)."""
        out: set[str] = set()
        for listener in scope.listeners:
            for eh in listener.hosts:
                if "*" not in eh.host:
                    out |= {eh.host} & self.services.keys()
                elif eh.namespace == "*":
                    return set(self.services)
                else:
                    out |= set(self._services_by_namespace.get(eh.namespace, ()))
        return out

    @cached_property
    def _services_by_namespace(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for fqdn, view in self.services.items():
            out[view.service.namespace].append(fqdn)
        return out

    # --- authorization --------------------------------------------------------------------------------

    def authorization_policies(self, proxy: Proxy) -> list[AuthorizationPolicy]:
        """Policies in the root namespace without selector, plus those in the proxy's namespace that select it."""
        out = []
        for ap in self._authz:
            labels = ap.selector.match_labels if ap.selector else {}
            if (ap.namespace == ROOT_NAMESPACE and not labels) or (
                ap.namespace == proxy.namespace and labels.items() <= proxy.labels.items()
            ):
                out.append(ap)
        return out


def _features(vs: VirtualService) -> set[str]:
    out = set()
    if any(rule.cors_policy is not None for rule in vs.http):
        out.add("cors")
    if any(m.source_labels for r in vs.http for m in r.match):
        out.add("source_labels")
    if export_scope(vs.export_to, vs.namespace) is not None:
        out.add("export")
    return out


def _visible(vss: Iterable[VirtualService], namespace: str) -> list[VirtualService]:
    """The VirtualServices a visibility namespace's index holds ("": all of them)."""
    return [vs for vs in vss if not namespace or virtual_service_visible(vs, namespace)]


def _replaced(objects: list[Named], pairs: Sequence[Pair]) -> list[Named]:
    """A sorted list of config objects with the changed ones swapped (an edit keeps its place), added or removed."""
    if all(b is not None and a is not None for b, a in pairs):
        swap = {id(b): a for b, a in pairs}
        return [swap.get(id(o), o) for o in objects]
    gone = {id(b) for b, _ in pairs if b is not None}
    kept: list[Named] = [o for o in objects if id(o) not in gone]
    kept += [a for _, a in pairs if a is not None]
    return sorted(kept, key=lambda o: (o.namespace, o.name))


def routes_by_original_destination(push: PushContext, view: ServiceView) -> bool:
    """A headless service under transparent interception, as Istio serves it: its clusters are ORIGINAL_DST
    (the pod the client dialled, by IP) and its virtual hosts also answer `*.<name>` (each pod's own name). In the
    HTTP_PROXY mode there is no original destination: the service's name is load-balanced like any other."""
    return view.service.headless and push.options.interception == "iptables"


def routes_pods_by_name(push: PushContext, view: ServiceView) -> bool:
    """A headless service in the HTTP_PROXY mode: the app sends every request to its sidecar, so a pod's own name
    (`<pod>.<service>...`) is routed by Host to a cluster of that pod alone (`pod_cluster`)."""
    return view.service.headless and push.options.interception != "iptables"


def pod_cluster(port: int, pod: Pod, view: ServiceView) -> str:
    """`outbound|PORT||<pod>.<service fqdn>`: one pod of a headless service, addressed by its name."""
    return outbound_cluster(port, "", f"{pod.name}.{view.fqdn}")


def http_ports(service: Service) -> list[ServicePort]:
    """Ports routed by Host and path (Istio's protocol selection: `mesh.istio.protocol`)."""
    return [p for p in service.ports if is_http_port(p)]


def tcp_ports(service: Service) -> list[ServicePort]:
    """Ports routed as connections (TCP, TLS, HTTPS, databases): `tcp.py`."""
    return [p for p in service.ports if not is_http_port(p)]
