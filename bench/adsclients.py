"""Simulated proxies for the scale benchmarks: N ADS streams that subscribe like Envoy, decode every resource they
receive into its Envoy message (as Envoy must before it can ACK) and ACK. A route table that names a VHDS source
gets its own delta stream, as Envoy 1.40 opens it (a wildcard subscription, keeping the hosts under `<table>/`),
whose virtual hosts are decoded and ACKed the same way.

Run as a separate process so their CPU does not share the control plane's GIL:
    python -m bench.adsclients PORT NODES_FILE
NODES_FILE is JSON: {"nodes": [...], "subscriptions": [{"eds": [...], "rds": [...]}, ...], "of": {node: index}}
(each node's EDS and RDS names). Prints "ready" once every stream is open.
"""

from __future__ import annotations

import json
import queue
import sys
import threading

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
VHDS = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
MESSAGES = {
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
    SDS: secret_pb2.Secret,
}


def stream(channel: grpc.Channel, node: str, eds: list[str], rds: list[str]) -> None:
    q: queue.Queue[discovery_pb2.DiscoveryRequest] = queue.Queue()
    n = base_pb2.Node(id=node, cluster="bench")
    for t in (CDS, LDS):
        q.put(discovery_pb2.DiscoveryRequest(node=n, type_url=t))
    names = {EDS: eds, RDS: rds, SDS: ["default", "ROOTCA"]}
    subscribed = set()
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    vhds: set[str] = set()
    for resp in stub.StreamAggregatedResources(iter(q.get, None)):
        message = MESSAGES[resp.type_url]
        for resource in resp.resources:
            decoded = message.FromString(resource.value)
            table = (
                decoded.name if isinstance(decoded, route_pb2.RouteConfiguration) and decoded.HasField("vhds") else ""
            )
            if table and table not in vhds:
                vhds.add(table)
                threading.Thread(target=virtual_hosts, args=(channel, n, table), daemon=True).start()
        q.put(
            discovery_pb2.DiscoveryRequest(
                node=n,
                type_url=resp.type_url,
                version_info=resp.version_info,
                response_nonce=resp.nonce,
                resource_names=names.get(resp.type_url, []),
            )
        )
        follow = {CDS: (EDS, SDS), LDS: (RDS,)}.get(resp.type_url, ())
        for t in follow:
            if t not in subscribed:
                subscribed.add(t)
                q.put(discovery_pb2.DiscoveryRequest(node=n, type_url=t, resource_names=names[t]))


def virtual_hosts(channel: grpc.Channel, node: base_pb2.Node, table: str) -> None:
    """One route table's VHDS stream: what Envoy holds is kept (hosts under `<table>/`), removals dropped."""
    q: queue.Queue[discovery_pb2.DeltaDiscoveryRequest] = queue.Queue()
    q.put(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=VHDS))
    held: dict[str, route_components_pb2.VirtualHost] = {}
    stub = rds_pb2_grpc.VirtualHostDiscoveryServiceStub(channel)
    for resp in stub.DeltaVirtualHosts(iter(q.get, None)):
        for resource in resp.resources:
            if resource.name.rpartition("/")[0] == table:
                held[resource.name] = route_components_pb2.VirtualHost.FromString(resource.resource.value)
        for name in resp.removed_resources:
            held.pop(name, None)
        q.put(discovery_pb2.DeltaDiscoveryRequest(type_url=VHDS, response_nonce=resp.nonce))


def main() -> None:
    port, spec_file = int(sys.argv[1]), sys.argv[2]
    with open(spec_file) as f:
        spec = json.load(f)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 256 << 20)])
    for node in spec["nodes"]:
        names = spec["subscriptions"][spec["of"][node]]
        threading.Thread(target=stream, args=(channel, node, names["eds"], names["rds"]), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin


if __name__ == "__main__":
    main()
