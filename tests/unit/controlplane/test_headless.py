"""Headless services (no VIP), as Istio translates them: under transparent interception ORIGINAL_DST clusters
(still mTLS) and virtual hosts that also answer `*.<service>` (each pod's own name); no endpoints to push."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from mesh.api import LoadBalancerSettings, MeshConfig, Service, TrafficPolicy, Version, helpers
from mesh.api.networking import ConsistentHashLB
from mesh.controlplane.simulate import route
from mesh.controlplane.translate import MeshOptions, PushContext
from mesh.controlplane.xds import resources as rt
from mesh.runtime import pod_dns_names

from .conftest import World

DB = "db.default.svc.cluster.local"
APP = ["{python}", "-m", "mesh.sampleapp"]


def _world(interception: str, *resources: object) -> World:
    db = Service(name="db", headless=True, versions=[Version(name="v1", replicas=2, command=APP)])
    client = Service(name="client", versions=[Version(name="v1", command=APP)])
    world = World(MeshConfig(services=[client, db]).add(*resources))  # type: ignore[arg-type]
    world.push = PushContext(world.config, world.pods, MeshOptions(interception=interception))  # type: ignore[arg-type]
    return world


def _of(world: World, kind: str) -> dict[str, object]:
    return dict(world.snapshot(world.sidecar("client-v1-0")).resources(kind).items)


def test_captured_headless_clusters_are_original_dst_with_mtls_and_no_endpoints() -> None:
    world = _world("iptables")
    db = _of(world, rt.CLUSTER)[f"outbound|9080||{DB}"]
    assert isinstance(db, cluster_pb2.Cluster)
    assert db.type == cluster_pb2.Cluster.ORIGINAL_DST and db.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert not db.HasField("eds_cluster_config")
    assert db.transport_socket.name == "envoy.transport_sockets.tls"
    assert not any(
        isinstance(m, endpoint_pb2.ClusterLoadAssignment) and DB in n for n, m in _of(world, rt.ENDPOINT).items()
    )


def test_a_consistent_hash_rule_cannot_turn_original_dst_into_a_ring() -> None:
    policy = TrafficPolicy(
        load_balancer=LoadBalancerSettings(consistent_hash=ConsistentHashLB(http_header_name="x-user"))
    )
    world = _world("iptables", helpers.subsets_by_version(Service(name="db", versions=[Version(name="v1")]), policy))
    for name in (f"outbound|9080||{DB}", f"outbound|9080|v1|{DB}"):
        c = _of(world, rt.CLUSTER)[name]
        assert isinstance(c, cluster_pb2.Cluster) and c.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED


def test_pod_names_reach_the_service_routes_only_under_capture() -> None:
    captured = _world("iptables")
    routes = _of(captured, rt.ROUTE)["9080"]
    assert isinstance(routes, route_pb2.RouteConfiguration)
    pod = next(p for p in captured.pods if p.name == "db-v1-1")
    for name in pod_dns_names(pod, "default"):
        hit = route(routes, f"{name}:9080", "/")
        assert hit is not None and hit.virtual_host == f"{DB}:9080", name
        assert hit.clusters == {f"outbound|9080||{DB}": 100}

    assert route(routes, "db:9080", "/") is not None


def test_without_capture_each_pod_name_routes_to_a_cluster_of_that_pod() -> None:
    """HTTP_PROXY mode: no original destination exists (the app dials its sidecar), so each pod name is routed by
    Host to `outbound|PORT||<pod>.<service fqdn>`, whose only endpoint is that pod; the name load-balances."""
    world = _world("proxy")
    (table,) = _of(world, rt.ROUTE).values()
    assert isinstance(table, route_pb2.RouteConfiguration)
    for pod in ("db-v1-0", "db-v1-1"):
        for name in (f"{pod}.{DB}", f"{pod}.db.default", f"{pod}.db"):
            hit = route(table, f"{name}:9080", "/")
            assert hit is not None and hit.clusters == {f"outbound|9080||{pod}.{DB}": 100}, name
    hit = route(table, "db:9080", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080||{DB}": 100}
    clusters, endpoints = _of(world, rt.CLUSTER), _of(world, rt.ENDPOINT)
    service = clusters[f"outbound|9080||{DB}"]
    assert isinstance(service, cluster_pb2.Cluster) and service.type == cluster_pb2.Cluster.EDS
    one = clusters[f"outbound|9080||db-v1-1.{DB}"]
    assert isinstance(one, cluster_pb2.Cluster) and one.transport_socket.name == "envoy.transport_sockets.tls"
    cla = endpoints[f"outbound|9080||db-v1-1.{DB}"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    assert [e.endpoint.hostname for lb in cla.endpoints for e in lb.lb_endpoints] == ["db-v1-1"]


def test_pod_dns_names_are_a_stateful_sets() -> None:
    pod = next(p for p in _world("proxy").pods if p.name == "db-v1-0")
    assert pod_dns_names(pod, "default") == [
        "db-v1-0.db.default.svc.cluster.local",
        "db-v1-0.db.default.svc",
        "db-v1-0.db.default",
        "db-v1-0.db",
    ]
    assert pod_dns_names(pod, "other")[-1] == "db-v1-0.db.default"


def test_the_gateway_reaches_a_headless_service_through_eds_even_under_capture() -> None:
    """Nothing captures the gateway's connections: an ORIGINAL_DST cluster there would dial the gateway itself."""
    world = _world("iptables")
    snap = world.snapshot(world.gateway)
    c = snap.resources(rt.CLUSTER).items[f"outbound|9080||{DB}"]
    assert isinstance(c, cluster_pb2.Cluster) and c.type == cluster_pb2.Cluster.EDS
    cla = snap.resources(rt.ENDPOINT).items[f"outbound|9080||{DB}"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    assert {e.endpoint.hostname for lb in cla.endpoints for e in lb.lb_endpoints} == {"db-v1-0", "db-v1-1"}
    sidecar = _of(world, rt.CLUSTER)[f"outbound|9080||{DB}"]  # and the sidecars' stay ORIGINAL_DST
    assert isinstance(sidecar, cluster_pb2.Cluster) and sidecar.type == cluster_pb2.Cluster.ORIGINAL_DST
