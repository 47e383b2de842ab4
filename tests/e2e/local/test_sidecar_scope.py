"""The Sidecar resource on the real data path: a workload whose Sidecar does not list a service cannot reach it
through its sidecar (Envoy has no route: 404), an in-scope call still works, other workloads keep the whole mesh,
and `mesh proxy-config clusters` shows the cut."""

from __future__ import annotations

from collections.abc import Callable

from mesh.api import MeshConfig
from mesh.api.sidecar import IstioEgressListener, Sidecar, SidecarWorkloadSelector
from mesh.cli.proxyconfig import show
from mesh.harness.under_test import LocalMeshUnderTest

from ..conftest import replace

FQDN = "{}.default.svc.cluster.local"


def _cluster_rows(mesh: LocalMeshUnderTest, pod_name: str) -> list[str]:
    local = mesh.mesh
    pod = next(p for p in local.registry.pods if p.name == pod_name)
    return [line for line in show("clusters", local.admin_address(pod), "table").splitlines()[1:] if line.strip()]


def test_a_sidecar_scope_cuts_what_a_proxy_can_reach(
    mesh: LocalMeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    productpage, reviews = mesh.from_pod("productpage"), mesh.from_pod("reviews")
    assert productpage.get("http://echo:9080/").status == 200
    before = _cluster_rows(mesh, "productpage-v1-0")
    assert any(FQDN.format("echo") in row for row in before)

    scope = Sidecar(
        name="productpage",
        workload_selector=SidecarWorkloadSelector(labels={"app": "productpage"}),
        egress=[IstioEgressListener(hosts=[f"./{FQDN.format('reviews')}", f"./{FQDN.format('details')}"])],
    )
    mesh_policies(replace(mesh.config, scope))  # returns once every proxy ACKed

    blocked = productpage.get("http://echo:9080/")
    assert blocked.status == 404, blocked.text[:200]  # the sidecar has no route: the call never leaves
    assert blocked.headers.get("server") == "envoy"
    assert productpage.get("http://reviews:9080/").status == 200  # in scope
    assert reviews.get("http://echo:9080/").status == 200  # another workload: the whole mesh
    assert mesh.ingress("bookinfo.local").get("/productpage").status == 200  # the page still renders

    after = _cluster_rows(mesh, "productpage-v1-0")
    assert not any(FQDN.format(s) in row for row in after for s in ("echo", "ratings", "productpage"))
    assert any(FQDN.format("reviews") in row for row in after)
    assert len(after) < len(before)
