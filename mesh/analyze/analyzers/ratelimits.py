"""MSH0007: route-scoped RateLimits that limit nothing, or that Kubernetes cannot apply. Locally a selector that
matches no gateway route silently limits nothing; on Kubernetes the limit's EnvoyFilter finds a route only by the
name Istio gives it (the http rule's name), so an unnamed rule cannot be limited there."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.ratelimit import RateLimit, gateway_rules


@analyzer("ratelimit.routes", "Route-scoped RateLimits select named gateway routes", ("MSH0007",))
def route_limits(ctx: Context) -> Iterator[Finding]:
    rules = gateway_rules(ctx.config.virtual_services)
    for limit in ctx.config.of_kind(RateLimit):
        for i, sel in enumerate(limit.routes):
            hits = [(vs, j, rule) for vs, j, rule, m in rules if sel.selects(limit.namespace, vs, rule, m)]
            path = f"spec.routes[{i}]"
            if not hits:
                why = "matches no http rule of a VirtualService bound to a gateway: it limits nothing"
                yield finding("MSH0007", path=path, selector=sel.describe(), why=why, **at(limit))
                continue
            unnamed = sorted(
                {f"http[{j}] of VirtualService {vs.namespace}/{vs.name}" for vs, j, r in hits if not r.name}
            )
            if unnamed:
                why = (
                    f"matches unnamed rules ({', '.join(unnamed)}): on Kubernetes an EnvoyFilter finds a route only "
                    "by its name, so it limits nothing there (give each rule a `name`)"
                )
                yield finding("MSH0007", path=path, selector=sel.describe(), why=why, **at(limit))
