"""networking.istio.io/v1alpha3 EnvoyFilter: a typed envelope around patches to Envoy's own config.

Istio's webhook converts each patch value into the Envoy message its `applyTo` names and rejects what does
not parse; we do the same with Envoy's protos (xds-protos), so a misspelt field fails here, not as a NACK.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mesh.api._base import INT32_MAX, Int, IstioModel, Resource
from mesh.api.networking import PolicyTargetReference
from mesh.api.sidecar import SidecarWorkloadSelector

ApplyTo = Literal[
    "INVALID",
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
]
PatchContext = Literal["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"]
Operation = Literal["INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE"]

# applyTo -> (module, message) of the Envoy type a patch value must parse as
_ENVOY_TYPES: dict[str, tuple[str, str]] = {
    "LISTENER": ("envoy.config.listener.v3.listener_pb2", "Listener"),
    "FILTER_CHAIN": ("envoy.config.listener.v3.listener_components_pb2", "FilterChain"),
    "NETWORK_FILTER": ("envoy.config.listener.v3.listener_components_pb2", "Filter"),
    "HTTP_FILTER": (
        "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
        "HttpFilter",
    ),
    "ROUTE_CONFIGURATION": ("envoy.config.route.v3.route_pb2", "RouteConfiguration"),
    "VIRTUAL_HOST": ("envoy.config.route.v3.route_components_pb2", "VirtualHost"),
    "HTTP_ROUTE": ("envoy.config.route.v3.route_components_pb2", "Route"),
    "CLUSTER": ("envoy.config.cluster.v3.cluster_pb2", "Cluster"),
    "EXTENSION_CONFIG": ("envoy.config.core.v3.extension_pb2", "TypedExtensionConfig"),
    "BOOTSTRAP": ("envoy.config.bootstrap.v3.bootstrap_pb2", "Bootstrap"),
    "LISTENER_FILTER": ("envoy.config.listener.v3.listener_components_pb2", "ListenerFilter"),
}


def check_patch_value(apply_to: str, value: dict[str, Any]) -> None:
    """Parse `value` as the Envoy message for `apply_to`; raise ValueError naming Envoy's complaint.

    A typed_config whose `@type` is not among the installed protos cannot be checked and is accepted.
    """
    target = _ENVOY_TYPES.get(apply_to)
    if target is None:
        return
    from google.protobuf import json_format

    module = importlib.import_module(target[0])
    message = getattr(module, target[1])()
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as e:
        text = str(e)
        if "Can not find message descriptor by type_url" in text or "Invalid type url" in text:
            return
        raise ValueError(f"patch.value is not a valid Envoy {target[1]}: {text.splitlines()[0]}") from None


class ProxyMatch(IstioModel):
    proxy_version: str | None = None
    metadata: dict[str, str] = {}


class ClusterMatch(IstioModel):
    port_number: Int | None = Field(default=None, ge=1, le=65535)
    service: str | None = None
    subset: str | None = None
    name: str | None = None


class RouteMatch(IstioModel):
    name: str | None = None
    action: Literal["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"] | None = None


class VirtualHostMatch(IstioModel):
    name: str | None = None
    domain_name: str | None = None
    route: RouteMatch | None = None


class RouteConfigurationMatch(IstioModel):
    port_number: Int | None = Field(default=None, ge=1, le=65535)
    port_name: str | None = None
    gateway: str | None = None
    vhost: VirtualHostMatch | None = None
    name: str | None = None


class SubFilterMatch(IstioModel):
    name: str | None = None


class FilterMatch(IstioModel):
    name: str | None = None
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioModel):
    name: str | None = None
    sni: str | None = None
    transport_protocol: str | None = None
    application_protocols: str | None = None
    filter: FilterMatch | None = None
    destination_port: Int | None = Field(default=None, ge=1, le=65535)


class ListenerMatch(IstioModel):
    port_number: Int | None = Field(default=None, ge=1, le=65535)
    port_name: str | None = None
    filter_chain: FilterChainMatch | None = None
    listener_filter: str | None = None
    name: str | None = None


class WaypointRouteMatch(IstioModel):
    name: str | None = None


class WaypointMatch(IstioModel):
    port_number: Int | None = Field(default=None, ge=1, le=65535)
    route: WaypointRouteMatch | None = None
    filter: FilterMatch | None = None


class EnvoyConfigObjectMatch(IstioModel):
    context: PatchContext | None = None
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None

    @model_validator(mode="after")
    def _one_object(self) -> EnvoyConfigObjectMatch:
        given = [n for n in ("listener", "route_configuration", "cluster", "waypoint") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError("match one of listener, routeConfiguration, cluster or waypoint")
        return self


class Patch(IstioModel):
    operation: Operation | None = None
    value: dict[str, Any] | None = None
    filter_class: Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"] | None = None


class EnvoyConfigObjectPatch(IstioModel):
    apply_to: ApplyTo | None = None
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None

    @model_validator(mode="after")
    def _valid(self) -> EnvoyConfigObjectPatch:
        if self.apply_to in (None, "INVALID"):
            raise ValueError("applyTo is required")
        if self.patch is None or self.patch.operation in (None, "INVALID"):
            raise ValueError("patch.operation is required")
        if self.patch.operation != "REMOVE" and self.patch.value is None:
            raise ValueError(f"patch.value is required for {self.patch.operation}")
        if self.patch.value is not None:
            check_patch_value(self.apply_to, self.patch.value)
        return self


class EnvoyFilter(Resource):
    api_version: ClassVar[str] = "networking.istio.io/v1alpha3"
    kind: ClassVar[str] = "EnvoyFilter"

    # networking.v1alpha3.WorkloadSelector, as Sidecar's: `labels`, not `matchLabels` (Istio's CRD has no such field)
    workload_selector: SidecarWorkloadSelector | None = None
    target_refs: list[PolicyTargetReference] = []
    config_patches: list[EnvoyConfigObjectPatch] = []
    priority: Int | None = Field(default=None, ge=-INT32_MAX - 1, le=INT32_MAX)

    @model_validator(mode="after")
    def _one_target(self) -> EnvoyFilter:
        if self.workload_selector is not None and self.target_refs:
            raise ValueError("set workloadSelector or targetRefs, not both")
        return self
