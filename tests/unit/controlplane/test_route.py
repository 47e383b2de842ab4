"""One HTTP rule's translation: header operations land where Envoy reads them, in Istio's order."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from mesh.api import HTTPRoute, MeshConfig, Service, Version, VirtualService
from mesh.api import helpers as h
from mesh.api.networking import HeaderOperations, Headers
from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.route import RouteScope, translate_http
from mesh.istio import MESH_GATEWAY
from mesh.runtime import pods_for, sidecar_for

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _translate(*routes: HTTPRoute) -> list[rc.Route]:
    svc = Service(name="reviews", versions=[Version(name="v1", replicas=1, command=["x"])])
    vs = VirtualService(name="reviews", hosts=["reviews"], http=list(routes))
    config = MeshConfig().add(svc, vs)
    pods = pods_for(svc, lambda: ("127.97.0.1", "127.97.0.2"))
    push = PushContext(config, pods)
    return list(translate_http(RouteScope(push, vs, sidecar_for(pods[0]), 9080, MESH_GATEWAY)))


def test_destination_headers_come_before_the_rules_and_set_before_add() -> None:
    dest = h.to("reviews")
    dest.headers = Headers(
        request=HeaderOperations(set={"x-b": "1", "x-a": "2"}, add={"x-c": "3"}, remove=["x-d"]),
        response=HeaderOperations(remove=["server"]),
    )
    rule_headers = Headers(request=HeaderOperations(set={"x-rule": "r"}, remove=["x-e"]))
    (route,) = _translate(HTTPRoute(route=[dest], headers=rule_headers))
    added = [(o.header.key, o.header.value, o.append_action) for o in route.request_headers_to_add]
    assert added == [("x-a", "2", OVERWRITE), ("x-b", "1", OVERWRITE), ("x-c", "3", APPEND), ("x-rule", "r", OVERWRITE)]
    assert list(route.request_headers_to_remove) == ["x-d", "x-e"]
    assert list(route.response_headers_to_remove) == ["server"]


def test_weighted_destinations_keep_their_own_headers() -> None:
    a, b = h.to("reviews", weight=70), h.to("reviews", weight=30)
    b.headers = Headers(response=HeaderOperations(set={"x-canary": "yes"}))
    (route,) = _translate(HTTPRoute(route=[a, b]))
    first, second = route.route.weighted_clusters.clusters
    assert not first.response_headers_to_add
    assert [(o.header.key, o.header.value) for o in second.response_headers_to_add] == [("x-canary", "yes")]
    assert not route.response_headers_to_add
