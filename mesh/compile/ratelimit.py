"""RateLimit -> the Istio `EnvoyFilter`s its users would write by hand.

A workload-wide limit: Envoy's local_ratelimit filter inserted before the router in the HTTP connection manager of
the selected workloads' inbound listeners and of gateways. A route-scoped limit: `HTTP_ROUTE` patches merging the
filter's per-route config into each selected gateway route's `typed_per_filter_config` (Istio names an Envoy route
after its http rule, `<rule>.<match>` when the match clause has a name too: only named rules can be patched), plus
one shared EnvoyFilter in the root namespace inserting the listener-disabled route filter into every gateway.
The filter config is `RateLimit.envoy_config()`, the one the local control plane pushes, so both targets run the same.
"""

from __future__ import annotations

from mesh.api.config import MeshConfig
from mesh.api.envoyfilter import (
    EnvoyConfigObjectMatch,
    EnvoyConfigObjectPatch,
    EnvoyFilter,
    FilterChainMatch,
    FilterMatch,
    ListenerMatch,
    Patch,
    PatchContext,
    RouteConfigurationMatch,
    RouteMatch,
    SubFilterMatch,
    VirtualHostMatch,
)
from mesh.api.ratelimit import (
    LOCAL_RATELIMIT_FILTER,
    LOCAL_RATELIMIT_TYPE,
    ROUTE_RATELIMIT_FILTER,
    RateLimit,
    gateway_rules,
    route_filter_config,
)
from mesh.api.sidecar import SidecarWorkloadSelector
from mesh.errors import PolicyError
from mesh.istio.constants import ROOT_NAMESPACE

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
CONTEXTS: tuple[PatchContext, ...] = ("SIDECAR_INBOUND", "GATEWAY")
ROUTE_FILTER_NAME = "meshops-route-ratelimit"  # the shared EnvoyFilter that inserts the route-scoped filter


def _before_router(context: PatchContext, name: str, config: dict[str, object]) -> EnvoyConfigObjectPatch:
    value = {"name": name, "typed_config": {"@type": LOCAL_RATELIMIT_TYPE, **config}}
    return EnvoyConfigObjectPatch(
        apply_to="HTTP_FILTER",
        match=EnvoyConfigObjectMatch(
            context=context,
            listener=ListenerMatch(
                filter_chain=FilterChainMatch(filter=FilterMatch(name=HCM, sub_filter=SubFilterMatch(name=ROUTER)))
            ),
        ),
        patch=Patch(operation="INSERT_BEFORE", value=value),
    )


def envoy_filter(limit: RateLimit, config: MeshConfig | None = None) -> EnvoyFilter:
    """The limit's own EnvoyFilter (`config`: the VirtualServices a route-scoped limit's selectors resolve in)."""
    if limit.route_scoped:
        patches = route_patches(limit, config or MeshConfig())
    else:
        patches = [_before_router(context, LOCAL_RATELIMIT_FILTER, limit.envoy_config()) for context in CONTEXTS]
    return EnvoyFilter(
        name=f"ratelimit-{limit.name}",
        namespace=limit.namespace,
        workload_selector=SidecarWorkloadSelector(labels=limit.workload_selector.match_labels)
        if limit.workload_selector
        else None,
        config_patches=patches,
    )


def route_filter() -> EnvoyFilter:
    """Every gateway carries the route-scoped filter, disabled: a route's merged per-route config enables it there
    (one shared instance, so two limits never run the filter twice on one request)."""
    return EnvoyFilter(
        name=ROUTE_FILTER_NAME,
        namespace=ROOT_NAMESPACE,
        config_patches=[_before_router("GATEWAY", ROUTE_RATELIMIT_FILTER, dict(route_filter_config()))],
    )


def route_names(limit: RateLimit, config: MeshConfig) -> list[str]:
    """The Envoy route names (Istio's) of the gateway routes the limit's selectors pick, in policy order. A selected
    rule without a name cannot be found by an EnvoyFilter: refused, naming the rule and what to do."""
    out: list[str] = []
    for vs, i, rule, m in gateway_rules(config.virtual_services):
        if not any(sel.selects(limit.namespace, vs, rule, m) for sel in limit.routes):
            continue
        if not rule.name:
            raise PolicyError(
                f"RateLimit {limit.namespace}/{limit.name} selects http[{i}] of VirtualService "
                f"{vs.namespace}/{vs.name}, which has no name: an EnvoyFilter finds a gateway route only by "
                "the name Istio gives it (the http rule's name)",
                hint=f"give that rule a name (http[{i}].name) in VirtualService {vs.namespace}/{vs.name}",
            )
        name = f"{rule.name}.{m.name}" if m is not None and m.name else rule.name
        if name not in out:
            out.append(name)
    if not out:
        wanted = ", ".join(sel.describe() for sel in limit.routes)
        raise PolicyError(
            f"RateLimit {limit.namespace}/{limit.name} selects no gateway route ({wanted})",
            hint="check the selectors against the VirtualServices bound to a gateway (`mesh render` lists them)",
        )
    return out


def route_patches(limit: RateLimit, config: MeshConfig) -> list[EnvoyConfigObjectPatch]:
    per_route = {ROUTE_RATELIMIT_FILTER: {"@type": LOCAL_RATELIMIT_TYPE, **limit.envoy_config()}}
    return [
        EnvoyConfigObjectPatch(
            apply_to="HTTP_ROUTE",
            match=EnvoyConfigObjectMatch(
                context="GATEWAY",
                route_configuration=RouteConfigurationMatch(vhost=VirtualHostMatch(route=RouteMatch(name=name))),
            ),
            patch=Patch(operation="MERGE", value={"typed_per_filter_config": per_route}),
        )
        for name in route_names(limit, config)
    ]
