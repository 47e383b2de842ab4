"""RateLimit -> the Istio `EnvoyFilter` its users would write by hand: Envoy's local_ratelimit filter inserted before
the router in the HTTP connection manager of the selected workloads' inbound listeners and of gateways. The filter's
config is `RateLimit.envoy_config()`, the one the local control plane pushes, so both targets run the same."""

from __future__ import annotations

from mesh.api.envoyfilter import (
    EnvoyConfigObjectMatch,
    EnvoyConfigObjectPatch,
    EnvoyFilter,
    FilterChainMatch,
    FilterMatch,
    ListenerMatch,
    Patch,
    PatchContext,
    SubFilterMatch,
)
from mesh.api.ratelimit import LOCAL_RATELIMIT_FILTER, LOCAL_RATELIMIT_TYPE, RateLimit

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
CONTEXTS: tuple[PatchContext, ...] = ("SIDECAR_INBOUND", "GATEWAY")


def envoy_filter(limit: RateLimit) -> EnvoyFilter:
    value = {"name": LOCAL_RATELIMIT_FILTER, "typed_config": {"@type": LOCAL_RATELIMIT_TYPE, **limit.envoy_config()}}
    return EnvoyFilter(
        name=f"ratelimit-{limit.name}",
        namespace=limit.namespace,
        workload_selector=limit.workload_selector,
        config_patches=[
            EnvoyConfigObjectPatch(
                apply_to="HTTP_FILTER",
                match=EnvoyConfigObjectMatch(
                    context=context,
                    listener=ListenerMatch(
                        filter_chain=FilterChainMatch(
                            filter=FilterMatch(name=HCM, sub_filter=SubFilterMatch(name=ROUTER))
                        )
                    ),
                ),
                patch=Patch(operation="INSERT_BEFORE", value=value),
            )
            for context in CONTEXTS
        ],
    )
