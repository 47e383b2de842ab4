"""A sidecar's config under transparent interception, as Istio builds it (listener.go, listener_builder.go)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from mesh.api import MeshConfig
from mesh.api.security import PeerAuthentication, PeerAuthenticationMTLS
from mesh.controlplane.translate import MeshOptions, PushContext
from mesh.controlplane.xds import resources as rt

from .conftest import World


def _captured(world: World, **options: str) -> World:
    world.push = PushContext(world.config, world.pods, MeshOptions(interception="iptables", **options))  # type: ignore[arg-type]
    return world


def _listeners(world: World, pod: str) -> dict[str, listener_pb2.Listener]:
    items = world.snapshot(world.sidecar(pod)).resources(rt.LISTENER).items
    return {name: msg for name, msg in items.items() if isinstance(msg, listener_pb2.Listener)}


def test_virtual_outbound_hands_off_by_original_destination(world: World) -> None:
    listeners = _listeners(_captured(world), "productpage-v1-0")
    assert set(listeners) == {"virtualOutbound", "0.0.0.0_9080", "virtualInbound"}
    outbound = listeners["virtualOutbound"]
    assert outbound.use_original_dst.value and outbound.address.socket_address.port_value == 15001
    assert "PassthroughCluster" in outbound.default_filter_chain.filters[0].typed_config.value.decode(errors="ignore")
    per_port = listeners["0.0.0.0_9080"]
    assert per_port.bind_to_port.value is False  # reached only by hand-off, like Istio's


def test_virtual_inbound_has_chains_per_port_and_transport(world: World) -> None:
    inbound = _listeners(_captured(world), "ratings-v1-0")["virtualInbound"]
    assert inbound.address.socket_address.port_value == 15006
    assert next(f.name for f in inbound.listener_filters) == "envoy.filters.listener.original_dst"
    matches = {
        (c.filter_chain_match.destination_port.value, c.filter_chain_match.transport_protocol)
        for c in inbound.filter_chains
    }
    assert matches == {(9080, "tls")}  # the e2e policies are STRICT mesh-wide: no plaintext chain
    assert not inbound.HasField("default_filter_chain")  # and no plaintext passthrough to other ports


def test_permissive_workloads_get_plaintext_chains_and_passthrough(world: World) -> None:
    pa = PeerAuthentication(name="default", namespace="istio-system", mtls=PeerAuthenticationMTLS(mode="PERMISSIVE"))
    world.config = MeshConfig(
        services=list(world.config.services),
        resources=[r for r in world.config.resources if r.kind != "PeerAuthentication"] + [pa],
    )
    inbound = _listeners(_captured(world), "ratings-v1-0")["virtualInbound"]
    assert {c.filter_chain_match.transport_protocol for c in inbound.filter_chains} == {"tls", "raw_buffer"}
    assert inbound.default_filter_chain.name == "virtualInbound-catchall-tcp"


def test_route_tables_per_port_end_in_istios_catch_all(world: World) -> None:
    for policy, vhost in (("ALLOW_ANY", "allow_any"), ("REGISTRY_ONLY", "block_all")):
        snap = _captured(world, outbound_traffic_policy=policy).snapshot(world.sidecar("productpage-v1-0"))
        table = snap.resources(rt.ROUTE).items["9080"]
        assert isinstance(table, route_pb2.RouteConfiguration)
        assert table.virtual_hosts[-1].name == vhost and list(table.virtual_hosts[-1].domains) == ["*"]
        assert any(vh.name.startswith("reviews.default.svc.cluster.local:9080") for vh in table.virtual_hosts)


def test_inbound_clusters_reach_the_app_from_127_0_0_6(world: World) -> None:
    snap = _captured(world).snapshot(world.sidecar("ratings-v1-0"))
    clusters = snap.resources(rt.CLUSTER).items
    assert {"PassthroughCluster", "InboundPassthroughCluster", "BlackHoleCluster"} <= set(clusters)
    inbound = clusters["inbound|9080||"]
    assert inbound.upstream_bind_config.source_address.address == "127.0.0.6"
