"""MSH0001/MSH0002: route weights. Istio only rejects an all-zero split; we also flag totals that are not 100."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import HTTPRouteDestination, RouteDestination


@analyzer("virtualservice.weights", "Route weights total 100 and are not all zero", ("MSH0001", "MSH0002"))
def weights(ctx: Context) -> Iterator[Finding]:
    for vs in ctx.config.virtual_services:
        rules: list[tuple[str, int, Sequence[HTTPRouteDestination | RouteDestination]]] = []
        rules += [("http", i, r.route) for i, r in enumerate(vs.http)]
        rules += [("tcp", i, r.route) for i, r in enumerate(vs.tcp)]
        rules += [("tls", i, r.route) for i, r in enumerate(vs.tls)]
        for kind, i, route in rules:
            if len(route) < 2:
                continue
            ws = [rd.weight or 0 for rd in route]
            total = sum(ws)
            path = f"spec.{kind}[{i}].route"
            if total == 0:
                yield finding("MSH0002", path=path, n=len(route), **at(vs))
            elif total != 100:
                shares = ", ".join(
                    f"{rd.destination.subset or rd.destination.host} {100 * w / total:.1f}%"
                    for rd, w in zip(route, ws, strict=True)
                )
                yield finding("MSH0001", path=path, total=total, shares=shares, **at(vs))
