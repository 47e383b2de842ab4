"""PushContext: one immutable view of config + registry, indexed once and shared by every proxy's builders."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from mesh.analyze.analyzers.gateways import gateway_hosts, host_matches
from mesh.analyze.analyzers.security import effective_peer_authentication
from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway, Subset, TrafficPolicy, VirtualService
from mesh.api.security import AuthorizationPolicy
from mesh.api.workloads import Service, ServicePort, resolve_host
from mesh.controlplane.model import Pod, Proxy

ROOT_NAMESPACE = "istio-system"


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


class PushContext:
    def __init__(self, config: MeshConfig, pods: Sequence[Pod], version: str = "") -> None:
        self.config = config
        self.version = version
        by_service: dict[str, list[Pod]] = defaultdict(list)
        for p in pods:
            by_service[p.fqdn].append(p)
        self.services: dict[str, ServiceView] = {
            s.fqdn: ServiceView(s, tuple(by_service.get(s.fqdn, ())))
            for s in sorted(config.services, key=lambda s: s.fqdn)
        }

    # --- lookups ------------------------------------------------------------------------------------

    def service(self, host: str, namespace: str) -> ServiceView | None:
        return self.services.get(resolve_host(host, namespace))

    def destination_rule(self, fqdn: str, client_namespace: str) -> DestinationRule | None:
        return self.config.destination_rule_for(fqdn, client_namespace)

    def subset(self, fqdn: str, name: str, client_namespace: str) -> Subset | None:
        dr = self.destination_rule(fqdn, client_namespace)
        return next((s for s in dr.subsets if s.name == name), None) if dr else None

    def traffic_policy(self, fqdn: str, port: int, subset: str, client_namespace: str) -> TrafficPolicy:
        """Istio's merge: DR top-level, overridden by its port-level settings, overridden by the subset's."""
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
        view = self.services.get(pod.fqdn)
        if view is None:
            return "PERMISSIVE"
        version = next((v for v in view.service.versions if v.name == pod.version), None)
        if version is None:
            return "PERMISSIVE"
        pa = effective_peer_authentication(self.config, view.service, version)
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
        for vs in sorted(self.config.virtual_services, key=lambda v: (v.namespace, v.name)):
            if vs.gateways and "mesh" not in vs.gateways:
                continue
            for h in vs.hosts:
                out[resolve_host(h, vs.namespace)].append(vs)
        return out

    def gateway_virtual_services(self, gw: Gateway) -> list[tuple[VirtualService, list[str]]]:
        """VirtualServices bound to `gw`, each with the hosts of it that the gateway serves."""
        out = []
        for vs in sorted(self.config.virtual_services, key=lambda v: (v.namespace, v.name)):
            refs = [g if "/" in g else f"{vs.namespace}/{g}" for g in vs.gateways]
            if f"{gw.namespace}/{gw.name}" not in refs:
                continue
            served = gateway_hosts(gw, vs.namespace)
            hosts = [h for h in vs.hosts if any(host_matches(p, h) for p in served)]
            if hosts:
                out.append((vs, hosts))
        return out

    def gateways_for(self, proxy: Proxy) -> list[Gateway]:
        return [
            g
            for g in sorted(self.config.gateways, key=lambda g: (g.namespace, g.name))
            if g.selector and g.selector.items() <= proxy.labels.items()
        ]

    # --- authorization --------------------------------------------------------------------------------

    def authorization_policies(self, proxy: Proxy) -> list[AuthorizationPolicy]:
        """Policies in the root namespace without selector, plus those in the proxy's namespace that select it."""
        out = []
        for ap in sorted(self.config.authorization_policies, key=lambda a: (a.namespace, a.name)):
            labels = ap.selector.match_labels if ap.selector else {}
            if (ap.namespace == ROOT_NAMESPACE and not labels) or (
                ap.namespace == proxy.namespace and labels.items() <= proxy.labels.items()
            ):
                out.append(ap)
        return out


def http_ports(service: Service) -> list[ServicePort]:
    return [p for p in service.ports if p.protocol in ("http", "http2", "grpc")]
