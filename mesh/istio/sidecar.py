"""The Sidecar resource's scope, as Istio computes it (pilot/pkg/model/sidecar.go, push_context.go): which Sidecar
applies to a workload, and which services and VirtualServices its egress listeners let the proxy see.

Selection: a Sidecar of the workload's namespace whose `workloadSelector` matches the workload's labels, else the
namespace's Sidecar without selector, else the root namespace's Sidecar without selector (the mesh default, read
as if it were declared in the workload's namespace: its `./*` means the workload's own namespace), else none (every
service is visible). Equal candidates go by name (Istio: the oldest; we have no creation times).

Egress hosts are `namespace/dnsName`: `*/` any namespace, `./` the Sidecar's (or the borrowing workload's)
namespace, `~/` none; the dnsName is an FQDN or a `*` wildcard, matched against the service's FQDN as written
(Istio does not resolve short names here). A VirtualService is selected the same way, by its own namespace and
hosts, and the services its routes go to join the scope's clusters (Istio infers them so that a selected route
never points at a cluster the proxy lacks; they get no virtual host of their own).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mesh.api.networking import VirtualService
from mesh.api.sidecar import Sidecar
from mesh.istio.constants import ROOT_NAMESPACE
from mesh.istio.hosts import host_matches, resolve_host

ANY_NAMESPACE = "*"
THIS_NAMESPACE = "."
NO_NAMESPACE = "~"


def _selector(sidecar: Sidecar) -> Mapping[str, str]:
    return sidecar.workload_selector.labels if sidecar.workload_selector else {}


def applicable_sidecar(sidecars: Iterable[Sidecar], namespace: str, labels: Mapping[str, str]) -> Sidecar | None:
    """The Sidecar that configures a workload of `namespace` with `labels`, or None (no Sidecar: all visible)."""
    return SidecarIndex(sidecars).applicable(namespace, labels)


class SidecarIndex:
    """Sidecars indexed for `applicable`: by namespace, and selecting ones by one of their selector's labels, so
    finding a workload's Sidecar does not test every Sidecar of the mesh (1,000 workloads x 1,000 Sidecars)."""

    def __init__(self, sidecars: Iterable[Sidecar]) -> None:
        self._defaults: dict[str, Sidecar] = {}
        self._selecting: dict[tuple[str, str, str], list[Sidecar]] = {}
        for s in sorted(sidecars, key=lambda s: (s.namespace, s.name)):
            selector = _selector(s)
            if not selector:
                self._defaults.setdefault(s.namespace, s)
                continue
            k, v = min(selector.items())
            self._selecting.setdefault((s.namespace, k, v), []).append(s)

    def applicable(self, namespace: str, labels: Mapping[str, str]) -> Sidecar | None:
        matching = [
            s
            for k, v in labels.items()
            for s in self._selecting.get((namespace, k, v), ())
            if _selector(s).items() <= labels.items()
        ]
        if matching:
            return min(matching, key=lambda s: s.name)
        return self._defaults.get(namespace) or self._defaults.get(ROOT_NAMESPACE)


@dataclass(frozen=True)
class EgressHost:
    """One `namespace/dnsName` of an egress listener, its `.` already resolved."""

    namespace: str  # a namespace, `*` or `~`
    host: str  # an FQDN, `*` or `*.suffix`

    @classmethod
    def parse(cls, entry: str, namespace: str) -> EgressHost:
        ns, _, host = entry.rpartition("/")
        return cls(namespace if ns == THIS_NAMESPACE else ns, host)

    def selects(self, namespace: str, host: str) -> bool:
        """Whether an object of `namespace` with `host` (an FQDN or a VirtualService's wildcard) is in scope."""
        if self.namespace == NO_NAMESPACE or self.namespace not in (ANY_NAMESPACE, namespace):
            return False
        return host_matches(self.host, host)


@dataclass(frozen=True)
class EgressListener:
    port: int | None  # None: every port
    hosts: tuple[EgressHost, ...]


@dataclass(frozen=True)
class SidecarScope:
    """What one Sidecar lets a workload of `namespace` reach. `sidecar` None: everything (Istio's default scope)."""

    sidecar: Sidecar | None
    namespace: str
    listeners: tuple[EgressListener, ...] = ()

    @classmethod
    def of(cls, sidecar: Sidecar | None, namespace: str) -> SidecarScope:
        """`namespace` is the workload's: a root-namespace default reads `./` as the workload's namespace."""
        if sidecar is None:
            return cls(None, namespace)
        config_ns = namespace if sidecar.namespace == ROOT_NAMESPACE else sidecar.namespace
        listeners = tuple(
            EgressListener(
                e.port.number if e.port is not None else None,
                tuple(EgressHost.parse(h, config_ns) for h in e.hosts),
            )
            for e in sidecar.egress
        )
        return cls(sidecar, namespace, listeners)

    @property
    def key(self) -> tuple[str, str, str] | None:
        """Equal keys, equal scopes (None: the unscoped default)."""
        if self.sidecar is None:
            return None
        return (self.sidecar.namespace, self.sidecar.name, self.namespace)

    @property
    def unscoped(self) -> bool:
        """No Sidecar, or one without egress listeners (Istio then keeps the default: every service visible)."""
        return not self.listeners

    def ports(self, namespace: str, fqdn: str) -> frozenset[int | None]:
        """The egress listener ports through which a service is visible (None in the set: every port)."""
        if self.unscoped:
            return frozenset([None])
        return frozenset(lst.port for lst in self.listeners if any(h.selects(namespace, fqdn) for h in lst.hosts))

    def selects_service(self, namespace: str, fqdn: str, port: int | None = None) -> bool:
        ports = self.ports(namespace, fqdn)
        return None in ports or (port in ports if port is not None else bool(ports))

    def selects_virtual_service(self, vs: VirtualService, hosts: Iterable[str] | None = None) -> bool:
        """`hosts`: the VirtualService's hosts already resolved in its namespace (callers that test many scopes
        resolve them once)."""
        if self.unscoped:
            return True
        resolved = list(hosts) if hosts is not None else [resolve_host(h, vs.namespace) for h in vs.hosts]
        return any(eh.selects(vs.namespace, h) for lst in self.listeners for eh in lst.hosts for h in resolved)

    def outbound_traffic_policy(self, mesh_default: str) -> str:
        """The Sidecar's `outboundTrafficPolicy.mode`, else meshConfig's."""
        policy = self.sidecar.outbound_traffic_policy if self.sidecar is not None else None
        return policy.mode if policy is not None and policy.mode is not None else mesh_default


def route_destinations(vs: VirtualService) -> set[str]:
    """The FQDNs a VirtualService's HTTP routes send to (resolved in its namespace)."""
    return {resolve_host(d.destination.host, vs.namespace) for rule in vs.http for d in rule.route}
