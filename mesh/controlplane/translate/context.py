"""PushContext: one immutable view of config + registry, indexed once and shared by every proxy's builders."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel

from mesh.analyze.analyzers.gateways import gateway_hosts, host_matches
from mesh.analyze.analyzers.security import effective_peer_authentication
from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway, Subset, TrafficPolicy, VirtualService
from mesh.api.security import AuthorizationPolicy
from mesh.api.workloads import Service, ServicePort, resolve_host
from mesh.runtime import Pod, Proxy

ROOT_NAMESPACE = "istio-system"
T = TypeVar("T")


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
class MeshOptions:
    """Mesh-wide settings (Istio keeps these in meshConfig)."""

    access_log: bool = False  # meshConfig.accessLogFile=/dev/stdout: every proxy logs each request to its log


class PushContext:
    """`memo` survives from push to push (Pilot owns it): pieces whose inputs' content is unchanged are reused,
    so a one-route change re-translates one virtual host, not the mesh."""

    def __init__(
        self,
        config: MeshConfig,
        pods: Sequence[Pod],
        memo: dict[Hashable, Any] | None = None,
        options: MeshOptions | None = None,
    ) -> None:
        self.config = config
        self.options = options or MeshOptions()
        self.memo: dict[Hashable, Any] = memo if memo is not None else {}
        self.used: set[Hashable] = set()
        self._digests: dict[int, str] = {}
        self._once: dict[Hashable, Any] = {}
        self._modes: dict[tuple[str, int], str] = {}
        kinds: dict[str, list[Any]] = defaultdict(list)
        for r in config.resources:
            kinds[r.kind].append(r)
        self._pa_config = MeshConfig(resources=kinds["PeerAuthentication"])
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
        by_service: dict[str, list[Pod]] = defaultdict(list)
        for p in pods:
            by_service[p.fqdn].append(p)
        self._policies: dict[tuple[str, int, str, str], TrafficPolicy] = {}
        self.services: dict[str, ServiceView] = {
            s.fqdn: ServiceView(s, tuple(by_service.get(s.fqdn, ())))
            for s in sorted(config.services, key=lambda s: s.fqdn)
        }

    # --- memo across pushes ------------------------------------------------------------------------------

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """Remembered across pushes while `key` (the inputs' content) stays the same."""
        self.used.add(key)
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]  # type: ignore[no-any-return]

    def once(self, key: Hashable, make: Callable[[], T]) -> T:
        """Computed once per push (not remembered across pushes)."""
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]  # type: ignore[no-any-return]

    def digest(self, obj: BaseModel | None) -> str:
        """Content digest of a config object (computed once per push)."""
        if obj is None:
            return "-"
        d = self._digests.get(id(obj))
        if d is None:
            d = self._digests[id(obj)] = hashlib.blake2b(
                obj.__pydantic_serializer__.to_json(obj), digest_size=8
            ).hexdigest()
        return d

    @cached_property
    def uses_cors(self) -> bool:
        """Whether any rule has a CORS policy: only then do HTTP chains carry the CORS filter (it costs ~3% per hop)."""
        return any(rule.cors_policy is not None for vs in self._virtual_services for rule in vs.http)

    @cached_property
    def world_digest(self) -> str:
        """Everything a route may read besides its own VirtualService: services and DestinationRules."""
        h = hashlib.blake2b(digest_size=8)
        for obj in [*self.config.services, *self._destination_rules]:
            h.update(self.digest(obj).encode())
        return h.hexdigest()

    # --- lookups ------------------------------------------------------------------------------------

    def service(self, host: str, namespace: str) -> ServiceView | None:
        return self.services.get(resolve_host(host, namespace))

    @cached_property
    def _rules_by_host(self) -> dict[str, list[DestinationRule]]:
        out: dict[str, list[DestinationRule]] = defaultdict(list)
        for dr in self._destination_rules:
            out[resolve_host(dr.host, dr.namespace)].append(dr)
        return out

    def destination_rule(self, fqdn: str, client_namespace: str) -> DestinationRule | None:
        """Istio's choice: the rule in the client's namespace first, then any other (by namespace, name)."""
        rules = self._rules_by_host.get(resolve_host(fqdn, client_namespace), [])
        return next((d for d in rules if d.namespace == client_namespace), rules[0] if rules else None)

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
        if view is None:
            return "PERMISSIVE"
        version = next((v for v in view.service.versions if v.name == pod.version), None)
        if version is None:
            return "PERMISSIVE"
        pa = effective_peer_authentication(self._pa_config, view.service, version)
        if pa is None:
            return "PERMISSIVE"
        if port in pa.port_level_mtls and pa.port_level_mtls[port].mode != "UNSET":
            return pa.port_level_mtls[port].mode
        return pa.mtls.mode if pa.mtls and pa.mtls.mode != "UNSET" else "PERMISSIVE"

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

    @cached_property
    def mesh_virtual_services(self) -> dict[str, list[VirtualService]]:
        """fqdn -> VirtualServices bound to the mesh gateway, in a stable order (namespace, name)."""
        out: dict[str, list[VirtualService]] = defaultdict(list)
        for vs in self._virtual_services:
            if vs.gateways and "mesh" not in vs.gateways:
                continue
            for h in vs.hosts:
                out[resolve_host(h, vs.namespace)].append(vs)
        return out

    def gateway_virtual_services(self, gw: Gateway) -> list[tuple[VirtualService, list[str]]]:
        """VirtualServices bound to `gw`, each with the hosts of it that the gateway serves."""
        out = []
        for vs in self._virtual_services:
            refs = [g if "/" in g else f"{vs.namespace}/{g}" for g in vs.gateways]
            if f"{gw.namespace}/{gw.name}" not in refs:
                continue
            served = gateway_hosts(gw, vs.namespace)
            hosts = [h for h in vs.hosts if any(host_matches(p, h) for p in served)]
            if hosts:
                out.append((vs, hosts))
        return out

    def gateways_for(self, proxy: Proxy) -> list[Gateway]:
        return [g for g in self._gateways if g.selector and g.selector.items() <= proxy.labels.items()]

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


def http_ports(service: Service) -> list[ServicePort]:
    return [p for p in service.ports if p.protocol in ("http", "http2", "grpc")]
