"""Istio's semantics, once: host names, gateway binding, PeerAuthentication precedence, DestinationRule choice.

Above `mesh.api`, below `mesh.analyze` and `mesh.controlplane.translate`: both call these rules, so what analysis
warns about and what translation builds agree by construction (as Istio's `pkg/config/host` serves pilot and its
analyzers alike).
"""

from mesh.istio.constants import (
    DEFAULT_MTLS_MODE,
    DOMAIN_SUFFIX,
    EGRESS_GATEWAY_LABELS,
    EGRESS_GATEWAY_NAME,
    INGRESS_GATEWAY_LABELS,
    MESH_GATEWAY,
    ROOT_NAMESPACE,
)
from mesh.istio.destinations import destination_rule_for, pick_destination_rule, rule_host, tls_settings
from mesh.istio.faults import FaultShare, fault_share, fires
from mesh.istio.gateways import (
    binds_gateway,
    binds_mesh,
    gateway_hosts,
    gateway_key,
    gateway_ref,
    host_within,
    intersect_hosts,
    is_internal_gateway_ref,
    served_hosts,
    server_host,
    server_host_names,
    server_hosts,
    visible_hosts,
)
from mesh.istio.hosts import host_matches, hosts_overlap, resolve_host
from mesh.istio.peerauth import effective_peer_authentication, mtls_mode
from mesh.istio.routing import destination_port, is_wildcard, mesh_virtual_services
from mesh.istio.sidecar import SidecarIndex, SidecarScope, applicable_sidecar
from mesh.istio.visibility import export_scope, scopes_overlap, virtual_service_visible

__all__ = [
    "DEFAULT_MTLS_MODE",
    "DOMAIN_SUFFIX",
    "EGRESS_GATEWAY_LABELS",
    "EGRESS_GATEWAY_NAME",
    "INGRESS_GATEWAY_LABELS",
    "MESH_GATEWAY",
    "ROOT_NAMESPACE",
    "FaultShare",
    "SidecarIndex",
    "SidecarScope",
    "applicable_sidecar",
    "binds_gateway",
    "binds_mesh",
    "destination_port",
    "destination_rule_for",
    "effective_peer_authentication",
    "export_scope",
    "fault_share",
    "fires",
    "gateway_hosts",
    "gateway_key",
    "gateway_ref",
    "host_matches",
    "host_within",
    "hosts_overlap",
    "intersect_hosts",
    "is_internal_gateway_ref",
    "is_wildcard",
    "mesh_virtual_services",
    "mtls_mode",
    "pick_destination_rule",
    "resolve_host",
    "rule_host",
    "scopes_overlap",
    "served_hosts",
    "server_host",
    "server_host_names",
    "server_hosts",
    "tls_settings",
    "virtual_service_visible",
    "visible_hosts",
]
