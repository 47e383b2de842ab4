"""IST0109/MSH0004: one owner per name and per mesh host."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api._base import Resource
from mesh.api.networking import VirtualService
from mesh.istio import binds_mesh, export_scope, hosts_overlap, is_wildcard, resolve_host, scopes_overlap


@analyzer("names.unique", "Objects, services and subsets are named once", ("MSH0004",))
def duplicate_names(ctx: Context) -> Iterator[Finding]:
    first: dict[tuple[str, str, str], Resource] = {}
    for r in ctx.config.resources:
        if r.key in first:
            yield finding(
                "MSH0004", what=r.kind, name=f"{r.namespace}/{r.name}", where=f"first at {first[r.key].source}", **at(r)
            )
        else:
            first[r.key] = r
    svc_seen: set[str] = set()
    for s in ctx.config.services:
        if s.fqdn in svc_seen:
            yield finding("MSH0004", what="Service", name=f"{s.namespace}/{s.name}", where="services list", **at(s))
        svc_seen.add(s.fqdn)
    for dr in ctx.config.destination_rules:
        names = [s.name for s in dr.subsets]
        for i, n in enumerate(names):
            if n in names[:i]:
                yield finding(
                    "MSH0004",
                    path=f"spec.subsets[{i}].name",
                    what="subset",
                    name=repr(n),
                    where=f"subsets[{names.index(n)}]",
                    **at(dr),
                )


@dataclass(frozen=True)
class _Claim:
    vs: VirtualService
    index: int  # into spec.hosts
    host: str  # resolved in the VirtualService's namespace
    scope: frozenset[str] | None  # the namespaces that see it (None: all)


@analyzer("virtualservice.conflicts", "One VirtualService per host on the mesh gateway", ("IST0109",))
def conflicting_hosts(ctx: Context) -> Iterator[Finding]:
    """Claims collide when some namespace sees both (exportTo) and their hosts overlap (the same host, or nested
    wildcards); every VirtualService of a collision is reported, naming all of them."""
    claims = [
        _Claim(vs, i, resolve_host(h, vs.namespace), export_scope(vs.export_to, vs.namespace))
        for vs in ctx.config.virtual_services
        if binds_mesh(vs)
        for i, h in enumerate(vs.hosts)
    ]
    by_host: dict[str, list[_Claim]] = defaultdict(list)
    for c in claims:
        by_host[c.host].append(c)
    wild = [c for c in claims if is_wildcard(c.host)]
    for c in claims:
        candidates = by_host[c.host] + ([w for w in wild if w.host != c.host] if is_wildcard(c.host) else [])
        partners = [
            o
            for o in candidates
            if o.vs is not c.vs and hosts_overlap(c.host, o.host) and scopes_overlap(c.scope, o.scope)
        ]
        if partners:
            names = sorted({f"{v.namespace}/{v.name}" for v in (c.vs, *(o.vs for o in partners))})
            overlaps = sorted({o.host for o in partners if o.host != c.host})
            host = c.host + (f" (overlapping {', '.join(overlaps)})" if overlaps else "")
            yield finding("IST0109", path=f"spec.hosts[{c.index}]", others=", ".join(names), host=host, **at(c.vs))
