"""`VirtualService.http[].match[].sourceNamespace`: a rule applies only to callers in that namespace (Istio's
sourceMatchHTTP), on the real data path in either interception mode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from mesh.api import HTTPMatchRequest, HTTPRoute, MeshConfig, VirtualService
from mesh.api import helpers as h
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace


def _echo_by_namespace(namespace: str) -> VirtualService:
    return VirtualService(
        name="echo",
        hosts=["echo"],
        http=[
            HTTPRoute(name="from-ns", match=[HTTPMatchRequest(source_namespace=namespace)], route=[h.to("echo", "v2")]),
            HTTPRoute(name="default", route=[h.to("echo", "v1")]),
        ],
    )


def _versions(mesh: MeshUnderTest, n: int = 20) -> Counter[str]:
    client = mesh.from_pod("productpage")
    return Counter(str(client.get("http://echo:9080/").json["version"]) for _ in range(n))


def test_a_rule_for_the_callers_namespace_applies_and_one_for_another_does_not(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    mesh_policies(replace(mesh.config, _echo_by_namespace("default")))  # productpage's own namespace
    assert _versions(mesh) == Counter({"v2": 20})
    mesh_policies(replace(mesh.config, _echo_by_namespace("other")))
    assert _versions(mesh) == Counter({"v1": 20})  # ignoring the field would have sent these to v2
