"""`exportTo` on the real data path.

DestinationRule: a rule exported only to its own namespace is invisible to the ingress gateway (in istio-system), so
the gateway has no cluster for its subsets and answers 503 — what Istio does — while `*` (or no exportTo) makes it
visible again.

VirtualService: it applies to the proxies of the namespaces it is exported to and no others (Istio's
VirtualServicesForGateway), sidecars and the ingress gateway alike."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from mesh.api import HTTPRoute, MeshConfig, VirtualService
from mesh.api import helpers as h
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace, without


def _ingress_to_subset(config: MeshConfig) -> VirtualService:
    vs = next(r for r in config.resources if r.kind == "VirtualService" and r.name == "bookinfo")
    assert isinstance(vs, VirtualService)
    pinned = vs.model_copy(deep=True)
    for rule in pinned.http:
        for d in rule.route:
            d.destination.subset = "v1"
    return pinned


def test_a_destination_rule_exported_to_its_namespace_only_is_not_seen_by_the_gateway(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    client = mesh.ingress("bookinfo.local")
    rule = h.subsets_by_version(next(s for s in mesh.config.services if s.name == "productpage"))
    routes = _ingress_to_subset(mesh.config)
    rule.export_to = ["."]
    mesh_policies(replace(mesh.config, routes, rule))
    assert client.get("/productpage").status == 503  # no `outbound|9080|v1|productpage...` at the gateway
    rule.export_to = ["*"]
    mesh_policies(replace(mesh.config, routes, rule))
    assert client.get("/productpage").status == 200


ECHO = "echo.default.svc.cluster.local"


def _echo_to(version: str, export_to: list[str], namespace: str = "default") -> VirtualService:
    return VirtualService(
        name="echo",
        namespace=namespace,
        hosts=[ECHO],
        http=[HTTPRoute(name="pinned", route=[h.to(ECHO, version)])],
        export_to=export_to,
    )


def _echo_versions(mesh: MeshUnderTest, n: int = 20) -> Counter[str]:
    """Which echo version answers productpage's (namespace `default`) calls: routing is deterministic, so each
    configuration gives one version n times."""
    client = mesh.from_pod("productpage")
    return Counter(str(client.get("http://echo:9080/").json["version"]) for _ in range(n))


def test_a_virtual_service_applies_only_to_the_namespaces_it_is_exported_to(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    mesh_policies(replace(mesh.config, _echo_to("v2", ["."])))  # exported to its own namespace: productpage's
    assert _echo_versions(mesh) == Counter({"v2": 20})
    # `aaa`'s VirtualService sorts before default's and would route first if visibility were ignored (the two are
    # exported to disjoint namespaces, so no namespace sees both: no IST0109)
    mesh_policies(replace(mesh.config, _echo_to("v1", ["."]), _echo_to("v2", ["."], namespace="aaa")))
    assert _echo_versions(mesh) == Counter({"v1": 20})  # `aaa` keeps its VirtualService to itself
    mesh_policies(replace(without(mesh.config, "VirtualService", "echo"), _echo_to("v2", ["default"], namespace="aaa")))
    assert _echo_versions(mesh) == Counter({"v2": 20})  # exported to `default` by name


def test_a_gateway_virtual_service_exported_to_its_namespace_only_is_not_seen_by_the_gateway(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    client = mesh.ingress("bookinfo.local")
    bookinfo = next(r for r in mesh.config.resources if r.kind == "VirtualService" and r.name == "bookinfo")
    assert isinstance(bookinfo, VirtualService)
    mesh_policies(replace(mesh.config, bookinfo.model_copy(update={"export_to": ["."]})))
    assert client.get("/productpage").status == 404  # the gateway (istio-system) has no routes for the host
    mesh_policies(replace(mesh.config, bookinfo.model_copy(update={"export_to": ["istio-system"]})))
    assert client.get("/productpage").status == 200
