"""Which VirtualService routes a service, and which port a destination means (Istio's sidecar route building)."""

from __future__ import annotations

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


def mesh_virtual_services(
    virtual_services: Iterable[VirtualService], fqdns: Iterable[str]
) -> dict[str, list[VirtualService]]:
    """fqdn -> the mesh-bound VirtualServices whose hosts claim it, the one that routes it first.

    As Istio's sidecar routes: an exact host wins over any wildcard, among wildcards the most specific wins
    (`*.default.svc.cluster.local` over `*.cluster.local` over `*`), and equal claims go to the earlier
    VirtualService by (namespace, name). A service no VirtualService claims keeps its default route."""
    return MeshRoutes(virtual_services, fqdns).ranked


Order = tuple[str, str]  # (namespace, name): equal claims go to the earlier


def _order(vs: VirtualService) -> Order:
    return (vs.namespace, vs.name)


def claimed_hosts(vs: VirtualService) -> frozenset[str]:
    """The hosts a mesh-bound VirtualService claims, resolved in its namespace (none for a gateway-only one)."""
    return frozenset(resolve_host(h, vs.namespace) for h in vs.hosts) if binds_mesh(vs) else frozenset()


def claims(hosts: Iterable[str], fqdn: str) -> bool:
    """Whether any of `hosts` (exact or wildcard) claims `fqdn`."""
    return any(h == fqdn or (is_wildcard(h) and host_matches(h, fqdn)) for h in hosts)


class MeshRoutes:
    """The claims index behind `mesh_virtual_services`, kept from push to push: a changed VirtualService re-ranks
    only the hosts it claims, before or after the change (Istio rebuilds its VirtualService index only when
    VirtualServices changed; at 5,000 VirtualServices the whole index cost ~6 ms a push). Never edited in place:
    `replaced` returns a new index, so the previous push's stays intact for a rollback."""

    def __init__(self, virtual_services: Iterable[VirtualService], fqdns: Iterable[str]) -> None:
        self._fqdns = frozenset(fqdns)
        self._exact: dict[str, dict[Order, VirtualService]] = {}
        self._wild: dict[tuple[str, Order], VirtualService] = {}
        for vs in virtual_services:
            self._add(vs)
        self.ranked: dict[str, list[VirtualService]] = {}
        for fqdn in sorted(self._fqdns):
            self._rank(fqdn)

    def _add(self, vs: VirtualService) -> None:
        for h in claimed_hosts(vs):
            if is_wildcard(h):
                self._wild[(h, _order(vs))] = vs
            else:  # copied on write: an index `replaced` came from shares the rest
                self._exact[h] = {**self._exact.get(h, {}), _order(vs): vs}

    def _remove(self, vs: VirtualService) -> None:
        for h in claimed_hosts(vs):
            if is_wildcard(h):
                self._wild.pop((h, _order(vs)), None)
            else:
                self._exact[h] = {o: v for o, v in self._exact.get(h, {}).items() if o != _order(vs)}

    def _rank(self, fqdn: str) -> None:
        ranked: dict[Order, tuple[tuple[int, int, Order], VirtualService]] = {}
        candidates = [((0, 0, o), vs) for o, vs in self._exact.get(fqdn, {}).items()]
        candidates += [((1, -len(h), o), vs) for (h, o), vs in self._wild.items() if host_matches(h, fqdn)]
        for rank, vs in candidates:
            o = _order(vs)
            if o not in ranked or rank < ranked[o][0]:
                ranked[o] = (rank, vs)
        if ranked:
            self.ranked[fqdn] = [vs for _, vs in sorted(ranked.values(), key=lambda t: t[0])]
        else:
            self.ranked.pop(fqdn, None)

    def replaced(self, removed: Iterable[VirtualService], added: Iterable[VirtualService]) -> MeshRoutes:
        """A new index with `removed` taken out and `added` put in; only the hosts they claim are ranked again."""
        removed, added = list(removed), list(added)
        new = MeshRoutes.__new__(MeshRoutes)
        new._fqdns = self._fqdns
        new._exact = dict(self._exact)
        new._wild = dict(self._wild)
        new.ranked = dict(self.ranked)
        for vs in removed:
            new._remove(vs)
        for vs in added:
            new._add(vs)
        hosts = set().union(*(claimed_hosts(vs) for vs in [*removed, *added]))
        wild = any(is_wildcard(h) for h in hosts)
        for fqdn in [f for f in self._fqdns if claims(hosts, f)] if wild else hosts & self._fqdns:
            new._rank(fqdn)
        return new
