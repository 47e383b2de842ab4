"""VirtualService exportTo in translation: a proxy gets the routes of the VirtualServices exported to its namespace
only (sidecars and gateways alike, as Istio's VirtualServicesForGateway), and proxies of different namespaces never
share a route table or Sidecar scope that was built for the other one."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_pb2

from mesh.api import HTTPRoute, MeshConfig, Service, Version, VirtualService
from mesh.api import helpers as h
from mesh.compile import build_policies
from mesh.controlplane.pilot import resolve_secrets
from mesh.controlplane.simulate import Hit, route
from mesh.controlplane.translate import PushCache, build_snapshot
from mesh.controlplane.xds import resources as rt
from mesh.runtime import Proxy
from policies.workloads import APP, IMAGE

from .conftest import World

ECHO = "echo.default.svc.cluster.local"
V2 = f"outbound|9080|v2|{ECHO}"
CLIENT = Service(name="client", namespace="team", versions=[Version(name="v1", command=APP, image=IMAGE)])


def _echo_to_v2(export_to: list[str], namespace: str = "default") -> VirtualService:
    return VirtualService(
        name="echo",
        namespace=namespace,
        hosts=[ECHO],
        http=[HTTPRoute(name="pinned", route=[h.to(ECHO, "v2")])],
        export_to=export_to,
    )


def _world(*resources: VirtualService) -> World:
    cfg = build_policies("e2e")
    keys = {r.key for r in resources}
    kept = [r for r in cfg.resources if r.key not in keys]
    return World(MeshConfig([*cfg.services, CLIENT], [*kept, *resources]))


def _echo_cluster(world: World, proxy: Proxy, cache: PushCache | None = None) -> str:
    """The cluster the proxy sends `GET echo.default/` to."""
    snap = build_snapshot(world.push, proxy, resolve_secrets(world.ca, world.credentials, world.push, proxy), cache)
    (table,) = [t for t in snap.resources(rt.ROUTE).items.values() if isinstance(t, route_pb2.RouteConfiguration)]
    hit = route(table, f"{ECHO}:9080", "/")
    assert hit is not None
    (cluster,) = hit.clusters
    return cluster


@pytest.mark.parametrize("caller_first", ["productpage-v1-0", "client-v1-0"])
def test_a_virtual_service_exported_to_its_namespace_routes_only_that_namespaces_proxies(caller_first: str) -> None:
    """One push and one translation memo for both proxies, in either order: neither the push's Sidecar scopes (the
    unscoped default's key is the same in every namespace) nor the memo's route keys may hand one namespace's
    routes to the other."""
    world = _world(_echo_to_v2(["."]))
    cache = PushCache(world.push)
    got = {p: _echo_cluster(world, world.sidecar(p), cache) for p in (caller_first, "client-v1-0", "productpage-v1-0")}
    assert got["productpage-v1-0"] == V2  # default: the VirtualService's own namespace
    assert got["client-v1-0"] == f"outbound|9080||{ECHO}"  # team: not exported there, the service's default route


def test_export_to_a_named_namespace_and_to_every_namespace() -> None:
    named = _world(_echo_to_v2(["team"]))
    assert _echo_cluster(named, named.sidecar("client-v1-0")) == V2
    assert _echo_cluster(named, named.sidecar("productpage-v1-0")) == f"outbound|9080||{ECHO}"
    everywhere = _world(_echo_to_v2(["*"]))
    assert _echo_cluster(everywhere, everywhere.sidecar("client-v1-0")) == V2
    assert _echo_cluster(everywhere, everywhere.sidecar("productpage-v1-0")) == V2


def test_an_invisible_virtual_service_does_not_shadow_a_visible_one() -> None:
    """Visibility filters before the first claim wins: `aaa`'s VirtualService sorts first but `default` cannot see
    it, so default's own routes (exported to disjoint namespaces, the two are no IST0109 conflict)."""
    own = VirtualService(name="echo", hosts=["echo"], http=[HTTPRoute(route=[h.to("echo", "v1")])], export_to=["."])
    hidden = _world(_echo_to_v2(["."], namespace="aaa"), own)
    assert _echo_cluster(hidden, hidden.sidecar("productpage-v1-0")) == f"outbound|9080|v1|{ECHO}"


def test_the_gateway_sees_only_virtual_services_exported_to_its_namespace(world: World) -> None:
    """Istio filters gateway-bound VirtualServices by the gateway proxy's namespace (istio-system here): a bound
    VirtualService exported to `.` of `default` leaves the ingress gateway without routes for its hosts."""
    bookinfo = next(v for v in world.config.virtual_services if v.name == "bookinfo")

    def gateway_route(export_to: list[str]) -> Hit | None:
        w = _world(bookinfo.model_copy(update={"export_to": export_to}))
        tables = w.snapshot(w.gateway).resources(rt.ROUTE).items.values()
        table = next(t for t in tables if isinstance(t, route_pb2.RouteConfiguration) and t.name == "http.80")
        return route(table, "bookinfo.local", "/productpage")

    assert gateway_route(["."]) is None  # the gateway answers 404
    assert gateway_route(["istio-system"]) is not None
    assert gateway_route([]) is not None
