"""IST0132/IST0145: VirtualService hosts must be served by the gateways they bind to."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import Gateway
from mesh.istio import MESH_GATEWAY, gateway_hosts, host_matches, server_host


@analyzer("gateway.hosts", "VirtualService hosts are served by their gateways", ("IST0132",))
def vs_hosts_in_gateway(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        for ref in vs.gateways:
            gw = ctx.gateway(ref, vs.namespace)
            if gw is None or ref == MESH_GATEWAY:
                continue
            hosts = gateway_hosts(gw, vs.namespace)
            for i, host in enumerate(vs.hosts):
                if not any(host_matches(p, host) for p in hosts):
                    yield finding(
                        "IST0132",
                        path=f"spec.hosts[{i}]",
                        host=repr(host),
                        gateway=f"{gw.namespace}/{gw.name}",
                        hosts=hosts,
                        **at(vs),
                    )


@analyzer("gateway.conflicts", "Two gateways on one workload do not claim the same host and port", ("IST0145",))
def conflicting_gateways(ctx: Context) -> Iterator[Finding]:
    seen: dict[tuple[tuple[tuple[str, str], ...], int, str], Gateway] = {}
    for gw in sorted(ctx.config.gateways, key=lambda g: (g.namespace, g.name)):
        selector = tuple(sorted(gw.selector.items()))
        for i, server in enumerate(gw.servers):
            for host in server.hosts:
                key = (selector, server.port.number, server_host(host))
                other = seen.setdefault(key, gw)
                if other is not gw:
                    yield finding(
                        "IST0145",
                        path=f"spec.servers[{i}]",
                        others=f"{other.namespace}/{other.name}",
                        host=host,
                        port=server.port.number,
                        **at(gw),
                    )
