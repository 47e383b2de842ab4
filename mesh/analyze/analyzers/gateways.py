"""IST0132/IST0145/IST0101/MSH0009: gateways serve the hosts bound to them, select a workload, do not collide, name
credentials that exist, and see the VirtualServices bound to them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import Gateway, Server
from mesh.istio import (
    MESH_GATEWAY,
    export_scope,
    gateway_hosts,
    gateway_key,
    gateway_ref,
    is_internal_gateway_ref,
    served_hosts,
    virtual_service_visible,
)


@analyzer("gateway.hosts", "Each gateway a VirtualService binds serves at least one of its hosts", ("IST0132",))
def vs_hosts_in_gateway(ctx: Context) -> Iterator[Finding]:
    """Per (VirtualService, gateway), as Istio: fine when any host is served; reported when the gateway is missing."""
    for vs in ctx.config.virtual_services:
        for i, ref in enumerate(vs.gateways):
            if ref == MESH_GATEWAY or is_internal_gateway_ref(ref):
                continue
            gw = ctx.gateway(ref, vs.namespace)
            visible = gateway_hosts(gw, vs.namespace) if gw else []
            if gw is not None and served_hosts(vs.hosts, visible):
                continue
            yield finding(
                "IST0132",
                path=f"spec.gateways[{i}]",
                hosts=list(vs.hosts),
                gateway=gateway_ref(ref, vs.namespace),
                served=f"it serves {visible} to namespace {vs.namespace}" if gw else "it does not exist",
                **at(vs),
            )


@analyzer(
    "gateway.export",
    "A VirtualService bound to a gateway is exported to the namespace its proxies run in",
    ("MSH0009",),
)
def vs_exported_to_gateway(ctx: Context) -> Iterator[Finding]:
    """What translation does (`mesh.istio.virtual_service_visible` per gateway proxy): a gateway whose workloads all
    run in namespaces the VirtualService is not exported to answers 404 for its hosts."""
    for vs in ctx.config.virtual_services:
        if export_scope(vs.export_to, vs.namespace) is None:
            continue
        for ref in vs.gateways:
            if ref == MESH_GATEWAY or is_internal_gateway_ref(ref):
                continue
            gw = ctx.gateway(ref, vs.namespace)
            if gw is None or not gw.selector:
                continue  # missing: IST0101; without a selector it configures no proxy
            selector = gw.selector.items()
            namespaces = sorted({w.namespace for w in ctx.workloads if selector <= w.labels.items()})
            if namespaces and not any(virtual_service_visible(vs, ns) for ns in namespaces):
                yield finding(
                    "MSH0009",
                    path="spec.exportTo",
                    gateway=gateway_ref(ref, vs.namespace),
                    namespaces=", ".join(namespaces),
                    export_to=", ".join(vs.export_to),
                    **at(vs),
                )


@analyzer("gateway.selector", "A Gateway's selector matches a workload", ("IST0101",))
def gateway_selects_workload(ctx: Context) -> Iterator[Finding]:
    """Istio's 'Referenced selector not found': such a gateway configures no proxy, so nothing serves its hosts."""
    for gw in ctx.config.gateways:
        if gw.selector and not ctx.selects_any(gw.selector):
            yield finding("IST0101", path="spec.selector", what="selector", ref=_selector(gw.selector), **at(gw))


@analyzer("gateway.credentials", "Gateway credentialNames exist", ("IST0101",))
def gateway_credentials(ctx: Context) -> Iterator[Finding]:
    """Only where the credentials are known (the inventory lists them); a target that issues missing ones is fine."""
    known = ctx.inventory.credentials
    if known is None:
        return
    for gw in ctx.config.gateways:
        for i, server in enumerate(gw.servers):
            tls = server.tls
            names = [("credentialName", tls.credential_name)] if tls and tls.credential_name else []
            names += [(f"credentialNames[{j}]", n) for j, n in enumerate(tls.credential_names if tls else [])]
            for field, name in names:
                if name not in known:
                    yield finding(
                        "IST0101",
                        path=f"spec.servers[{i}].tls.{field}",
                        what="credentialName",
                        ref=repr(name),
                        **at(gw),
                    )


@analyzer("gateway.conflicts", "Two gateways on one workload do not claim the same host and port", ("IST0145",))
def conflicting_gateways(ctx: Context) -> Iterator[Finding]:
    """Hosts compared as written (`ns-1/*.example.com` is not `ns-2/*.example.com`), with the same bind; every
    gateway of a conflict is reported."""
    gws = sorted(ctx.config.gateways, key=lambda g: (g.namespace, g.name))
    for gw in gws:
        for i, server in enumerate(gw.servers):
            others = sorted(
                {
                    gateway_key(o)
                    for o in gws
                    if o is not gw and _same_workloads(ctx, gw, o)
                    for s in o.servers
                    if _collide(server, s)
                }
            )
            if others:
                yield finding(
                    "IST0145",
                    path=f"spec.servers[{i}]",
                    others=", ".join(others),
                    selector=_selector(gw.selector),
                    port=server.port.number,
                    host=",".join(server.hosts),
                    **at(gw),
                )


def _collide(a: Server, b: Server) -> bool:
    return a.port.number == b.port.number and a.bind == b.bind and bool(set(a.hosts) & set(b.hosts))


def _same_workloads(ctx: Context, a: Gateway, b: Gateway) -> bool:
    """The same selector, or selectors that both match some workload."""
    if a.selector == b.selector:
        return True
    return any(a.selector.items() <= w.labels.items() and b.selector.items() <= w.labels.items() for w in ctx.workloads)


def _selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
