"""DestinationRule `exportTo`: a rule exported only to its own namespace is invisible to the ingress gateway (in
istio-system), so the gateway has no cluster for its subsets and answers 503 — what Istio does — while `*` (or no
exportTo) makes it visible again."""

from __future__ import annotations

from collections.abc import Callable

from mesh.api import MeshConfig, VirtualService
from mesh.api import helpers as h
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace


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
