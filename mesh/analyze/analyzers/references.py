"""IST0101/IST0112/IST0165/IST0174: everything a VirtualService or DestinationRule points at must exist."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import Destination, VirtualService
from mesh.istio import MESH_GATEWAY, is_internal_gateway_ref


def vs_destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    """Every destination in a VirtualService with its field path."""
    for i, rule in enumerate(vs.http):
        for j, rd in enumerate(rule.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
        if rule.mirror:
            yield f"spec.http[{i}].mirror", rule.mirror
        for j, mp in enumerate(rule.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", mp.destination
    for i, tcp in enumerate(vs.tcp):
        for j, trd in enumerate(tcp.route):
            yield f"spec.tcp[{i}].route[{j}].destination", trd.destination
    for i, tls in enumerate(vs.tls):
        for j, trd in enumerate(tls.route):
            yield f"spec.tls[{i}].route[{j}].destination", trd.destination


@analyzer("virtualservice.destinations", "Destination hosts, ports and subsets exist", ("IST0101", "IST0112"))
def destinations(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        for path, dest in vs_destinations(vs):
            yield from _host_and_port(ctx, vs, path, dest)
            if dest.subset is not None:
                yield from _subset(ctx, vs, path, dest)


def _host_and_port(ctx: Context, vs: VirtualService, path: str, dest: Destination) -> Iterator[Finding]:
    svc = ctx.service(dest.host, vs.namespace)
    entry = ctx.service_entry(dest.host, vs.namespace) if svc is None else None
    if svc is None and entry is None:
        known = ", ".join(sorted(s.name for s in ctx.config.services)) or "none"
        yield finding(
            "IST0101", path=f"{path}.host", what="host", ref=f"{dest.host!r} (known services: {known})", **at(vs)
        )
        return
    ports = [p.number for p in svc.ports] if svc else [p.number for p in entry.ports] if entry else []
    if dest.port is not None and ports and dest.port.number not in ports:
        yield finding(
            "IST0101",
            path=f"{path}.port.number",
            what="host+port",
            ref=f"'{dest.host}:{dest.port.number}' (its ports: {ports})",
            **at(vs),
        )
    if svc is not None and dest.port is None and len(svc.ports) > 1:
        yield finding("IST0112", path=path, host=svc.name, ports=ports, **at(vs))


def _subset(ctx: Context, vs: VirtualService, path: str, dest: Destination) -> Iterator[Finding]:
    """Checked whether or not the host exists: the subset needs a DestinationRule either way (as Istio does)."""
    dr = ctx.destination_rule(dest.host, vs.namespace)
    if dr is None or all(s.name != dest.subset for s in dr.subsets):
        where = f"in DestinationRule {dr.namespace}/{dr.name}" if dr else f"(no DestinationRule for {dest.host})"
        yield finding(
            "IST0101",
            path=f"{path}.subset",
            what="subset",
            ref=f"{dest.subset!r} of host {dest.host!r} {where}",
            **at(vs),
        )


@analyzer("virtualservice.gateways", "Referenced gateways exist and are not internal", ("IST0101", "IST0165"))
def gateways(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        for i, ref in enumerate(vs.gateways):
            if ref == MESH_GATEWAY:
                continue
            if is_internal_gateway_ref(ref):
                yield finding(
                    "IST0165", path=f"spec.gateways[{i}]", vs=f"{vs.namespace}/{vs.name}", gateway=ref, **at(vs)
                )
            elif ctx.gateway(ref, vs.namespace) is None:
                yield finding("IST0101", path=f"spec.gateways[{i}]", what="gateway", ref=repr(ref), **at(vs))


@analyzer("destinationrule.host", "DestinationRule hosts match a service", ("IST0174",))
def destination_rule_hosts(ctx: Context) -> Iterator[Finding]:
    for dr in ctx.config.destination_rules:
        if ctx.service(dr.host, dr.namespace) is None and ctx.service_entry(dr.host, dr.namespace) is None:
            yield finding("IST0174", path="spec.host", host=repr(dr.host), **at(dr))
