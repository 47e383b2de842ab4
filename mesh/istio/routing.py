"""Which VirtualService routes a service, and which port a destination means (Istio's sidecar route building)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from mesh.api.networking import VirtualService
from mesh.istio.gateways import binds_mesh
from mesh.istio.hosts import host_matches, resolve_host


def destination_port(port: int | None, service_ports: Sequence[int], listener_port: int) -> int:
    """Istio's GetDestinationCluster: the destination's port, else the service's only port, else the port the
    request came in on (the virtual host's, or the gateway server's)."""
    if port is not None:
        return port
    if len(service_ports) == 1:
        return service_ports[0]
    return listener_port


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def _precedence(vs_host: str, index: int) -> tuple[int, int, int]:
    """Exact hosts first (in VirtualService order), then the most specific wildcard (the longest), then order."""
    if is_wildcard(vs_host):
        return (1, -len(vs_host), index)
    return (0, 0, index)


def mesh_virtual_services(
    virtual_services: Iterable[VirtualService], fqdns: Iterable[str]
) -> dict[str, list[VirtualService]]:
    """fqdn -> the mesh-bound VirtualServices whose hosts claim it, the one that routes it first.

    As Istio's sidecar routes: an exact host wins over any wildcard, among wildcards the most specific wins
    (`*.default.svc.cluster.local` over `*.cluster.local` over `*`), and equal claims go to the earlier
    VirtualService. A service no VirtualService claims keeps its default route."""
    exact: dict[str, list[tuple[int, VirtualService]]] = defaultdict(list)
    wild: list[tuple[str, int, VirtualService]] = []
    for i, vs in enumerate(v for v in virtual_services if binds_mesh(v)):
        for h in {resolve_host(h, vs.namespace) for h in vs.hosts}:
            if is_wildcard(h):
                wild.append((h, i, vs))
            else:
                exact[h].append((i, vs))
    out: dict[str, list[VirtualService]] = {}
    for fqdn in fqdns:
        ranked: dict[int, tuple[tuple[int, int, int], VirtualService]] = {}
        candidates = [(_precedence(fqdn, i), vs) for i, vs in exact.get(fqdn, [])]
        candidates += [(_precedence(h, i), vs) for h, i, vs in wild if host_matches(h, fqdn)]
        for rank, vs in candidates:
            if id(vs) not in ranked or rank < ranked[id(vs)][0]:
                ranked[id(vs)] = (rank, vs)
        if ranked:
            out[fqdn] = [vs for _, vs in sorted(ranked.values(), key=lambda t: t[0])]
    return out
