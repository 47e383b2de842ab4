"""A Sidecar resource cuts what its workloads' proxies receive: clusters, endpoints and virtual hosts of the services
its egress hosts select (plus the destinations of the VirtualServices it selects); other proxies keep everything."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from mesh.api import MeshConfig
from mesh.api.sidecar import IstioEgressListener, OutboundTrafficPolicy, Sidecar, SidecarWorkloadSelector
from mesh.compile import build_policies
from mesh.controlplane.simulate import route
from mesh.controlplane.translate import MeshOptions, PushContext
from mesh.controlplane.translate.capture import PASSTHROUGH
from mesh.controlplane.translate.clusters import BLACKHOLE
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.snapshot import Snapshot

from .conftest import World

FQDN = "{}.default.svc.cluster.local"


def _world(*sidecars: Sidecar, options: MeshOptions | None = None) -> World:
    cfg = build_policies("e2e")
    world = World(MeshConfig(cfg.services, [*cfg.resources, *sidecars]))
    if options is not None:
        world.push = PushContext(world.config, world.pods, options)
    return world


def _scoped(name: str, hosts: list[str], selector: dict[str, str] | None = None, **kw: object) -> Sidecar:
    return Sidecar(
        name=name,
        workload_selector=SidecarWorkloadSelector(labels=selector) if selector else None,
        egress=[IstioEgressListener(hosts=hosts)],
        **kw,
    )


def _services(snap: Snapshot) -> set[str]:
    """The service FQDNs the proxy has outbound clusters for."""
    return {n.split("|")[3] for n in snap.resources(rt.CLUSTER).items if n.startswith("outbound|")}


def _vhosts(snap: Snapshot) -> set[str]:
    (table,) = snap.resources(rt.ROUTE).items.values()
    assert isinstance(table, route_pb2.RouteConfiguration)
    return {vh.name for vh in table.virtual_hosts}


PRODUCTPAGE_DEPS = _scoped(
    "productpage", [f"./{FQDN.format('reviews')}", f"./{FQDN.format('details')}"], {"app": "productpage"}
)


def test_a_scoped_proxy_gets_only_the_services_its_sidecar_selects() -> None:
    world = _world(PRODUCTPAGE_DEPS)
    snap = world.snapshot(world.sidecar("productpage-v1-0"))
    assert _services(snap) == {FQDN.format("reviews"), FQDN.format("details")}
    assert _vhosts(snap) == {f"{FQDN.format('reviews')}:9080", f"{FQDN.format('details')}:9080"}
    assert set(snap.resources(rt.ENDPOINT).items) == snap.resources(rt.CLUSTER).eds_clusters()
    (table,) = snap.resources(rt.ROUTE).items.values()
    assert isinstance(table, route_pb2.RouteConfiguration)
    assert route(table, "ratings:9080", "/ratings/0") is None  # out of scope: the sidecar answers 404
    assert route(table, "reviews:9080", "/reviews/0") is not None


def test_other_workloads_keep_the_whole_mesh() -> None:
    world = _world(PRODUCTPAGE_DEPS)
    snap = world.snapshot(world.sidecar("reviews-v1-0"))
    assert _services(snap) == {FQDN.format(s) for s in ("productpage", "details", "reviews", "ratings", "echo")}


def test_the_namespace_default_and_the_selecting_sidecar() -> None:
    world = _world(PRODUCTPAGE_DEPS, _scoped("ns", [f"./{FQDN.format('ratings')}"]))
    assert _services(world.snapshot(world.sidecar("reviews-v1-0"))) == {FQDN.format("ratings")}
    assert FQDN.format("ratings") not in _services(world.snapshot(world.sidecar("productpage-v1-0")))


def test_the_destinations_of_a_selected_virtual_service_get_clusters_but_no_virtual_host() -> None:
    """`bookinfo`'s route for productpage is the gateway's; reviews' VirtualService goes to reviews only. A host
    routed elsewhere by a selected VirtualService brings the destination's clusters along (Istio infers them)."""
    from mesh.api import VirtualService
    from mesh.api import helpers as h

    moved = VirtualService(name="details", hosts=["details"], http=[h.split("echo", {"v1": 100})])
    cfg = build_policies("e2e")
    resources = [r for r in cfg.resources if r.key != moved.key]
    world = World(MeshConfig(cfg.services, [*resources, moved, PRODUCTPAGE_DEPS]))
    snap = world.snapshot(world.sidecar("productpage-v1-0"))
    assert FQDN.format("echo") in _services(snap)
    assert f"{FQDN.format('echo')}:9080" not in _vhosts(snap)
    snap.consistent()


def test_a_tilde_sidecar_leaves_nothing_outbound() -> None:
    world = _world(_scoped("none", ["~/*"], {"app": "productpage"}))
    snap = world.snapshot(world.sidecar("productpage-v1-0"))
    assert _services(snap) == set() and _vhosts(snap) == set()


def test_outbound_traffic_policy_of_the_sidecar_under_interception() -> None:
    """REGISTRY_ONLY on one workload's Sidecar: its unknown destinations go to the BlackHole, others' pass."""
    blocked = _scoped(
        "locked", ["./*"], {"app": "productpage"}, outbound_traffic_policy=OutboundTrafficPolicy(mode="REGISTRY_ONLY")
    )
    world = _world(blocked, options=MeshOptions(interception="iptables"))

    def catch_all(pod: str) -> str:
        table = world.snapshot(world.sidecar(pod)).resources(rt.ROUTE).items["9080"]
        assert isinstance(table, route_pb2.RouteConfiguration)
        last = table.virtual_hosts[-1].routes[0]
        return BLACKHOLE if last.HasField("direct_response") else last.route.cluster

    assert catch_all("productpage-v1-0") == BLACKHOLE
    assert catch_all("reviews-v1-0") == PASSTHROUGH
