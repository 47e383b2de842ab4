"""Gateway binding: which gateway a reference names and which of its hosts a VirtualService may claim."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mesh.api.networking import Gateway, Server, VirtualService
from mesh.istio.constants import MESH_GATEWAY
from mesh.istio.hosts import host_matches


def gateway_ref(ref: str, namespace: str) -> str:
    """`name` in a resource of `namespace` means `namespace/name`; `ns/name` and `mesh` stand as written."""
    if ref == MESH_GATEWAY or "/" in ref:
        return ref
    return f"{namespace}/{ref}"


def gateway_key(gw: Gateway) -> str:
    """The form `gateway_ref` normalises to."""
    return f"{gw.namespace}/{gw.name}"


def binds_mesh(vs: VirtualService) -> bool:
    """A VirtualService without gateways binds the sidecars; listing gateways binds them only if `mesh` is one."""
    return not vs.gateways or MESH_GATEWAY in vs.gateways


def binds_gateway(vs: VirtualService, gw: Gateway) -> bool:
    return gateway_key(gw) in {gateway_ref(g, vs.namespace) for g in vs.gateways}


def server_host(h: str) -> str:
    """A Gateway server host without its namespace part: `ns/host`, `*/host`, `./host` -> `host`."""
    return h.rpartition("/")[2]


def server_host_names(server: Server) -> list[str]:
    """A server's hosts without namespace parts, sorted and unique (what its certificate must name)."""
    return sorted({server_host(h) for h in server.hosts})


def visible_hosts(hosts: Iterable[str], gateway_namespace: str, vs_namespace: str) -> list[str]:
    """The hosts (`ns/host`, `*/host`, `./host`, bare `host`) a VirtualService in `vs_namespace` may bind."""
    out = []
    for h in hosts:
        ns, sep, host = h.rpartition("/")
        if not sep or ns == "*" or (ns == "." and vs_namespace == gateway_namespace) or ns == vs_namespace:
            out.append(host)
    return out


def gateway_hosts(gw: Gateway, vs_namespace: str) -> list[str]:
    """Every server's hosts visible to a VirtualService namespace."""
    return [h for server in gw.servers for h in visible_hosts(server.hosts, gw.namespace, vs_namespace)]


def server_hosts(server: Server, gw: Gateway, vs_namespace: str) -> list[str]:
    """One server's hosts visible to a VirtualService namespace."""
    return visible_hosts(server.hosts, gw.namespace, vs_namespace)


def served_hosts(vs_hosts: Sequence[str], visible: Sequence[str]) -> list[str]:
    """The VirtualService hosts that some visible gateway host matches, in the VirtualService's order."""
    return [h for h in vs_hosts if any(host_matches(p, h) for p in visible)]


def host_within(host: str, other: str) -> bool:
    """Whether every name `host` stands for is also named by `other` (Istio's SubsetOf)."""
    if other == "*":
        return True
    if other.startswith("*."):
        return host.endswith(other[1:]) and host != other[1:]
    return host == other


def intersect_hosts(server: Sequence[str], vs_hosts: Sequence[str]) -> list[str]:
    """The virtual hosts a gateway server gets for a VirtualService: each overlap of a server host and a
    VirtualService host, as the more specific of the two (a VirtualService for `*` on a server for `foo.bar`
    serves `foo.bar` only; hosts the server does not name get no virtual host, so a 404)."""
    out: list[str] = []
    for s in server:
        for v in vs_hosts:
            h = s if host_within(s, v) else v if host_within(v, s) else None
            if h is not None and h not in out:
                out.append(h)
    return out
