"""Istio's routing semantics where meshops used to differ (issue: fidelity), proved offline by simulation over the
translated route tables, as Istio's pilot/pkg/simulation tests do."""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from mesh.api import (
    Abort,
    Delay,
    HTTPFaultInjection,
    HTTPRoute,
    MeshConfig,
    Service,
    ServicePort,
    Version,
    VirtualService,
    helpers,
)
from mesh.controlplane.simulate import route
from mesh.controlplane.xds import resources as rt

from .conftest import World

SVC = "svc.cluster.local"


def _table(world: World, proxy: str = "productpage-v1-0") -> route_pb2.RouteConfiguration:
    snap = world.snapshot(world.gateway if proxy == "gateway" else world.sidecar(proxy))
    tables = [t for t in snap.resources(rt.ROUTE).items.values() if isinstance(t, route_pb2.RouteConfiguration)]
    return next(t for t in tables if t.name in ("http_proxy", "http.80"))


def _with(world: World, *objects: object) -> World:
    resources = [r for r in objects if not isinstance(r, Service)]
    keys = {r.key for r in resources}  # type: ignore[attr-defined]
    cfg = MeshConfig(
        services=[*world.config.services, *(s for s in objects if isinstance(s, Service))],
        resources=[r for r in world.config.resources if r.key not in keys],
    )
    cfg.add(*resources)  # type: ignore[arg-type]
    return World(cfg)


def _fault(world: World, host: str) -> fault_pb2.HTTPFault:
    hit = route(_table(world), host, "/")
    assert hit is not None and hit.route_proto is not None
    out = fault_pb2.HTTPFault()
    hit.route_proto.typed_per_filter_config["envoy.filters.http.fault"].Unpack(out)
    return out


# 1. A fault without a percentage never fires -------------------------------------------------------------------


def test_fault_without_percentage_is_passed_without_one_so_it_never_fires(world: World) -> None:
    fault = HTTPFaultInjection(delay=Delay(fixed_delay="7s"), abort=Abort(http_status=503))
    vs = VirtualService(name="echo", hosts=["echo"], http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=fault)])
    f = _fault(_with(world, vs), "echo:9080")
    assert not f.abort.HasField("percentage")  # Envoy reads an absent fraction as 0%
    assert f.delay.percentage == percent_pb2.FractionalPercent(
        numerator=0, denominator=percent_pb2.FractionalPercent.HUNDRED
    )


def test_fault_percentages_that_are_set_still_fire(world: World) -> None:
    fault = HTTPFaultInjection(
        delay=Delay(fixed_delay="1s", percent=30), abort=Abort(http_status=503, percentage={"value": 2.5})
    )
    vs = VirtualService(name="echo", hosts=["echo"], http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=fault)])
    f = _fault(_with(world, vs), "echo:9080")
    assert f.delay.percentage == percent_pb2.FractionalPercent(
        numerator=30, denominator=percent_pb2.FractionalPercent.HUNDRED
    )
    assert f.abort.percentage == percent_pb2.FractionalPercent(
        numerator=25_000, denominator=percent_pb2.FractionalPercent.MILLION
    )


# 2. A destination without a port: the service's only port, else the port the request came in on ----------------

MULTI = Service(
    name="multi",
    ports=[ServicePort(number=9080), ServicePort(number=9090, name="http-admin")],
    versions=[Version(name="v1", command=["x"])],
)


def test_destination_without_port_takes_the_virtual_hosts_port(world: World) -> None:
    vs = VirtualService(name="multi", hosts=["multi"], http=[HTTPRoute(route=[helpers.to("multi")])])
    table = _table(_with(world, MULTI, vs))
    for port in (9080, 9090):
        hit = route(table, f"multi:{port}", "/")
        assert hit is not None and hit.clusters == {f"outbound|{port}||multi.default.{SVC}": 100}


def test_destination_on_another_multi_port_service_takes_the_listener_port(world: World) -> None:
    """From reviews' 9080 virtual host to multi (two ports, none named): Istio picks 9080, not multi's first port."""
    base = _with(world, MULTI)
    multi_first_9090 = MULTI.model_copy(
        update={"ports": [ServicePort(number=9090, name="a"), ServicePort(number=9080)]}
    )
    vs = VirtualService(name="details", hosts=["details"], http=[HTTPRoute(route=[helpers.to("multi")])])
    world2 = World(
        MeshConfig(
            services=[s for s in base.config.services if s.name != "multi"] + [multi_first_9090],
            resources=base.config.resources,
        )
    )
    hit = route(_table(_with(world2, vs)), "details:9080", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080||multi.default.{SVC}": 100}


def test_single_port_destination_keeps_its_only_port(world: World) -> None:
    vs = VirtualService(name="multi", hosts=["multi"], http=[HTTPRoute(route=[helpers.to("details")])])
    hit = route(_table(_with(world, MULTI, vs)), "multi:9090", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080||details.default.{SVC}": 100}


# 3. Wildcard VirtualService hosts route every matching service no more specific VirtualService claims ------------


def _to(name: str, host: str, target: str) -> VirtualService:
    return VirtualService(name=name, hosts=[host], http=[HTTPRoute(route=[helpers.to(target)])])


def test_wildcard_virtual_service_routes_services_without_their_own(world: World) -> None:
    table = _table(_with(world, _to("wild", "*.cluster.local", "details")))
    productpage = route(table, "productpage:9080", "/")  # no VirtualService of its own: the wildcard's
    assert productpage is not None and productpage.clusters == {f"outbound|9080||details.default.{SVC}": 100}
    jason = route(table, "reviews:9080", "/", {"end-user": "jason"})  # its own (exact) VirtualService wins
    assert jason is not None and jason.clusters == {f"outbound|9080|v2|reviews.default.{SVC}": 100}


def test_most_specific_wildcard_wins(world: World) -> None:
    table = _table(_with(world, _to("a-broad", "*", "details"), _to("b-narrow", f"*.default.{SVC}", "ratings")))
    hit = route(table, "productpage:9080", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080||ratings.default.{SVC}": 100}


def test_wildcard_for_another_domain_leaves_services_on_their_default_route(world: World) -> None:
    hit = route(_table(_with(world, _to("ext", "*.example.com", "details"))), "productpage:9080", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080||productpage.default.{SVC}": 100}


# 4. Gateway virtual hosts are the overlap of the server's hosts and the VirtualService's ---------------------------


def test_gateway_virtual_service_for_star_serves_only_the_servers_hosts(world: World) -> None:
    bookinfo = next(v for v in world.config.virtual_services if v.name == "bookinfo")
    star = bookinfo.model_copy(update={"hosts": ["*"]})
    table = _table(_with(world, star), "gateway")
    assert {vh.name for vh in table.virtual_hosts} == {"bookinfo.local:80", "localhost:80"}
    assert route(table, "bookinfo.local", "/productpage") is not None
    assert route(table, "unknown.example.com", "/productpage") is None  # 404: the gateway does not serve it


def test_gateway_wildcard_server_takes_the_virtual_services_specific_host(world: World) -> None:
    from mesh.api import Gateway

    gw = next(g for g in world.config.gateways if g.name == "bookinfo")
    wide = Gateway.model_validate(
        {**gw.model_dump(), "servers": [{**gw.servers[0].model_dump(), "hosts": ["*.local"]}]}
    )
    bookinfo = next(v for v in world.config.virtual_services if v.name == "bookinfo")
    table = _table(_with(world, wide, bookinfo.model_copy(update={"hosts": ["bookinfo.local"]})), "gateway")
    assert [vh.name for vh in table.virtual_hosts] == ["bookinfo.local:80"]
    assert route(table, "other.local", "/productpage") is None
