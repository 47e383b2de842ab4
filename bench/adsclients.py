"""Simulated proxies for the scale benchmark: N ADS streams that subscribe like Envoy and ACK at once.

Run as a separate process so their CPU does not share the control plane's GIL:
    python -m bench.adsclients PORT NODES_FILE
NODES_FILE is JSON: {"nodes": [...], "eds": [...], "rds": [...]}. Prints "ready" once every stream is open.
"""

from __future__ import annotations

import json
import queue
import sys
import threading

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def stream(channel: grpc.Channel, node: str, eds: list[str], rds: list[str]) -> None:
    q: queue.Queue[discovery_pb2.DiscoveryRequest] = queue.Queue()
    n = base_pb2.Node(id=node, cluster="bench")
    for t in (CDS, LDS):
        q.put(discovery_pb2.DiscoveryRequest(node=n, type_url=t))
    names = {EDS: eds, RDS: rds, SDS: ["default", "ROOTCA"]}
    subscribed = set()
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    for resp in stub.StreamAggregatedResources(iter(q.get, None)):
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


def main() -> None:
    port, spec_file = int(sys.argv[1]), sys.argv[2]
    with open(spec_file) as f:
        spec = json.load(f)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 256 << 20)])
    for node in spec["nodes"]:
        threading.Thread(target=stream, args=(channel, node, spec["eds"], spec["rds"]), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin


if __name__ == "__main__":
    main()
