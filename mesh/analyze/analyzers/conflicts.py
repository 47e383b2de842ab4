"""IST0109/MSH0004: one owner per name and per mesh host."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api._base import Resource
from mesh.api.networking import VirtualService
from mesh.istio import binds_mesh, resolve_host


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


@analyzer("virtualservice.conflicts", "One VirtualService per host on the mesh gateway", ("IST0109",))
def conflicting_hosts(ctx: Context) -> Iterator[Finding]:
    owners: dict[str, list[VirtualService]] = defaultdict(list)
    for vs in ctx.config.virtual_services:
        if binds_mesh(vs):
            for host in {resolve_host(h, vs.namespace) for h in vs.hosts}:
                owners[host].append(vs)
    for host, vss in sorted(owners.items()):
        if len(vss) > 1:
            for vs in vss[1:]:
                others = ", ".join(f"{o.namespace}/{o.name}" for o in vss)
                yield finding("IST0109", path="spec.hosts", others=others, host=host, **at(vs))
