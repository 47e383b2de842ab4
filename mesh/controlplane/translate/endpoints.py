"""EDS: the pods behind every outbound cluster, selected by the service and the subset's labels."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from mesh.controlplane.translate.context import (
    PushContext,
    ServiceView,
    http_ports,
    outbound_cluster,
    pod_cluster,
    routes_by_original_destination,
    routes_pods_by_name,
)
from mesh.runtime import Pod


def _lb_endpoint(pod: Pod, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=pod.ip, port_value=port)),
            hostname=pod.name,
        ),
        health_status=health_check_pb2.HEALTHY if pod.healthy else health_check_pb2.UNHEALTHY,
    )


def service_endpoints(push: PushContext, view: ServiceView, ns: str) -> list[endpoint_pb2.ClusterLoadAssignment]:
    if routes_by_original_destination(push, view):
        return []  # a sidecar's ORIGINAL_DST clusters take no endpoints
    out = gateway_service_endpoints(push, view, ns)
    if routes_pods_by_name(push, view):
        out += [
            endpoint_pb2.ClusterLoadAssignment(
                cluster_name=pod_cluster(port.number, pod, view),
                endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[_lb_endpoint(pod, port.number)])],
            )
            for port in http_ports(view.service)
            for pod in view.pods
        ]
    return out


def gateway_service_endpoints(
    push: PushContext, view: ServiceView, ns: str
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """Every service's pods, headless ones too (a gateway's clusters are always EDS)."""
    dr = push.destination_rule(view.fqdn, ns)
    subsets: list[tuple[str, dict[str, str]]] = [("", {})]
    subsets += [(s.name, s.labels) for s in (dr.subsets if dr else [])]
    out = []
    for port in view.service.ports:
        for subset, labels in subsets:
            lb = [_lb_endpoint(pod, port.number) for pod in push.pods_for(view, labels)]
            out.append(
                endpoint_pb2.ClusterLoadAssignment(
                    cluster_name=outbound_cluster(port.number, subset, view.fqdn),
                    endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)] if lb else [],
                )
            )
    return out
