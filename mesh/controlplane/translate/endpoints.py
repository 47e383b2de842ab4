"""EDS: the pods behind every outbound cluster, selected by the service and the subset's labels."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from mesh.controlplane.model import Proxy
from mesh.controlplane.translate.context import PushContext, http_ports, outbound_cluster


def build_endpoints(push: PushContext, proxy: Proxy) -> tuple[endpoint_pb2.ClusterLoadAssignment, ...]:
    cache = push.__dict__.setdefault("_endpoints", {})
    if proxy.namespace not in cache:
        out = []
        for view in push.services.values():
            dr = push.destination_rule(view.fqdn, proxy.namespace)
            subsets: list[tuple[str, dict[str, str]]] = [("", {})]
            subsets += [(s.name, s.labels) for s in (dr.subsets if dr else [])]
            for port in http_ports(view.service):
                for subset, labels in subsets:
                    name = outbound_cluster(port.number, subset, view.fqdn)
                    lb = [
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=address_pb2.Address(
                                    socket_address=address_pb2.SocketAddress(address=pod.ip, port_value=port.number)
                                ),
                                hostname=pod.name,
                            ),
                            health_status=health_check_pb2.HEALTHY if pod.healthy else health_check_pb2.UNHEALTHY,
                        )
                        for pod in push.pods_for(view, labels)
                    ]
                    out.append(
                        endpoint_pb2.ClusterLoadAssignment(
                            cluster_name=name,
                            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb)] if lb else [],
                        )
                    )
        cache[proxy.namespace] = tuple(out)
    return cache[proxy.namespace]  # type: ignore[no-any-return]
