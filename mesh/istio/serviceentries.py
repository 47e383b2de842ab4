"""ServiceEntry semantics (Istio's `pilot/pkg/serviceregistry/serviceentry`): which hosts an entry adds to the
registry, where they are visible, what resolution and location default to, and the address Istio's DNS proxy
allocates for an entry that declares none. Translation and analysis both read these rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mesh.api.networking import Gateway, Protocol, canonical_protocol
from mesh.api.registry import Endpoint, ServiceEntry, ServiceEntryPort, WorkloadEntry
from mesh.istio.constants import DOMAIN_SUFFIX, EGRESS_GATEWAY_LABELS, EGRESS_GATEWAY_NAME
from mesh.istio.visibility import export_scope

AUTO_ALLOCATE_RANGE = ipaddress.IPv4Network("240.240.0.0/16")  # Istio's range for auto-allocated addresses
_SLOTS = 256 * 254  # Istio's slot count for auto-allocated addresses
_PRIME = 65011  # the largest prime below it: the collision step
HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY")
_KNOWN = frozenset(Protocol.__args__)  # type: ignore[attr-defined]


def resolution(se: ServiceEntry) -> str:
    """Istio's default resolution is NONE (the client's original destination)."""
    return se.resolution or "NONE"


def location(se: ServiceEntry) -> str:
    """Istio's default location is MESH_EXTERNAL."""
    return se.location or "MESH_EXTERNAL"


def port_protocol(port: ServiceEntryPort) -> str:
    """The port's protocol: declared, else by name prefix (`http-foo` is HTTP), else TCP, as Istio's protocol sniffing
    falls back to for ServiceEntry ports."""
    if port.protocol:
        return str(port.protocol)
    named = canonical_protocol(port.name.split("-", 1)[0])
    return named if isinstance(named, str) and named in _KNOWN else "TCP"


def is_http(port: ServiceEntryPort) -> bool:
    return port_protocol(port) in HTTP_PROTOCOLS


def visible_to(se: ServiceEntry, client_namespace: str) -> bool:
    """exportTo: `*` or unset everywhere, `.` the entry's own namespace, else the listed namespaces."""
    scope = export_scope(se.export_to, se.namespace)
    return scope is None or client_namespace in scope


def _fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def allocate_addresses(hosts: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(namespace, host) -> an address in 240.240.0.0/16 by Istio's rule (`serviceentry/auto_allocation.go`): the
    FNV-1a hash of `namespace/host` picks one of 256*254 slots, a collision is resolved by double hashing, and the
    slots in order become `240.240.x.y` skipping host part 0. A host keeps its address while the others do not
    collide with it; ties are broken in sorted order, so declaration order does not matter."""
    slots: dict[int, tuple[str, str]] = {}
    for key in sorted(set(hosts)):
        h = _fnv32a(f"{key[0]}/{key[1]}")
        slot = h % _SLOTS
        if slot in slots:
            step, i = _PRIME - h % _PRIME, 1
            while (slot := ((h + i * step) & 0xFFFFFFFF) % (_SLOTS - 1)) in slots:
                i += 1
        slots[slot] = key
    out: dict[tuple[str, str], str] = {}
    bumps = 0
    for slot in sorted(slots):
        x = slot + 1 + bumps
        if x % 255 == 0:  # never 240.240.k.0
            bumps += 1
            x += 1
        out[slots[slot]] = f"{AUTO_ALLOCATE_RANGE.network_address + 256 * (x // 255) + x % 255}"
    return out


def egress_gateway_servers(config_resources: Iterable[object]) -> list[ServiceEntryPort]:
    """The ports of the Gateways that select the egress gateway (labels `istio: egressgateway`): the egress gateway
    runs when there is one, and its Service exposes these ports."""
    out: dict[int, ServiceEntryPort] = {}
    for gw in config_resources:
        if isinstance(gw, Gateway) and gw.selector and gw.selector.items() <= EGRESS_GATEWAY_LABELS.items():
            for s in gw.servers:
                out.setdefault(
                    s.port.number, ServiceEntryPort(number=s.port.number, name=s.port.name, protocol=s.port.protocol)
                )
    return [out[k] for k in sorted(out)]


def egress_gateway_entry(ip: str, ports: Sequence[ServiceEntryPort], namespace: str) -> ServiceEntry:
    """The egress gateway's Service as the registry holds it: `istio-egressgateway.<ns>.svc.<suffix>` with the
    gateway's address as its one endpoint (what Kubernetes' Service and EndpointSlice give Istio)."""
    return ServiceEntry(
        name=EGRESS_GATEWAY_NAME,
        namespace=namespace,
        hosts=[f"{EGRESS_GATEWAY_NAME}.{namespace}.svc.{DOMAIN_SUFFIX}"],
        ports=list(ports),
        location="MESH_INTERNAL",
        resolution="STATIC",
        endpoints=[
            Endpoint(
                address=ip, labels=dict(EGRESS_GATEWAY_LABELS), service_account=f"{EGRESS_GATEWAY_NAME}-service-account"
            )
        ],
    )


def auto_allocated(se: ServiceEntry) -> bool:
    """Istio allocates for entries without addresses, except wildcard hosts and resolution NONE."""
    return not se.addresses and resolution(se) != "NONE"


@dataclass(frozen=True)
class EntryEndpoint:
    """One endpoint of an entry: an inline `endpoints` item or a WorkloadEntry its selector finds."""

    address: str
    ports: Mapping[str, int]
    labels: Mapping[str, str]
    weight: int | None = None
    service_account: str | None = None


def entry_endpoints(se: ServiceEntry, workload_entries: Sequence[WorkloadEntry]) -> list[EntryEndpoint]:
    """Inline endpoints, or the WorkloadEntries of the entry's namespace its workloadSelector matches."""
    if se.workload_selector is not None:
        want = se.workload_selector.match_labels.items()
        return [
            EntryEndpoint(we.address or "", we.ports, we.workload_labels, we.weight, we.service_account)
            for we in sorted(workload_entries, key=lambda w: (w.namespace, w.name))
            if we.namespace == se.namespace and we.address and want <= we.workload_labels.items()
        ]
    return [
        EntryEndpoint(e.address or "", e.ports, e.labels, e.weight, e.service_account)
        for e in se.endpoints
        if e.address
    ]


def endpoint_port(endpoint: EntryEndpoint, port: ServiceEntryPort) -> int:
    """An endpoint's port for a service port: its own mapping by port name, else targetPort, else the port."""
    return endpoint.ports.get(port.name) or port.target_port or port.number
