"""Istio's semantics where they show on the data path, and the outcome Istio's fault-injection docs task states.

Each policy is the Istio YAML a user would apply unchanged (our own documents, written after Istio's docs)."""

from __future__ import annotations

from collections.abc import Callable

from mesh.api import MeshConfig, VirtualService
from mesh.compile import load_yaml
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace

HOST = "bookinfo.local"


def _apply(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None], yaml_text: str) -> None:
    mesh_policies(replace(mesh.config, *load_yaml(yaml_text, "fidelity.yaml").resources))


RATINGS_DELAY_FOR_JASON = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    fault:
      delay: {percentage: {value: 100.0}, fixedDelay: 7s}
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
"""


def test_fault_injection_task_jason_sees_reviews_unavailable_after_about_6s(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    """Istio's docs: a 7 s ratings delay for jason; productpage gives reviews 3 s plus one retry, so the page
    answers after about 6 s saying reviews are unavailable. Everyone else is not delayed."""
    _apply(mesh, mesh_policies, RATINGS_DELAY_FOR_JASON)
    page = mesh.ingress(HOST).get("/productpage", {"end-user": "jason"})
    assert page.status == 200, page.text
    reviews = page.call("reviews")
    assert reviews["status"] != 200 and "unavailable" in reviews["error"], reviews
    assert reviews["attempts"] == 2
    # two 3 s attempts: at least 6 s (timers may fire a few ms early), well before the 7 s delay would end
    assert 5.9 <= page.elapsed < 6.9, page.elapsed
    other = mesh.ingress(HOST).get("/productpage", {"end-user": "someone"})
    assert other.status == 200 and other.call("reviews")["status"] == 200
    assert other.elapsed < 3.0


def test_fault_without_percentage_never_fires(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    """As in Istio (istio/istio#36303): no `percentage` means Envoy gets none, and the fault never fires."""
    _apply(
        mesh,
        mesh_policies,
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - fault: {abort: {httpStatus: 418}}
    route:
    - destination: {host: echo, subset: v1}
""",
    )
    client = mesh.from_pod("productpage")
    statuses = [client.get("http://echo:9080/fault").status for _ in range(50)]
    assert statuses == [200] * 50  # fired on every request before the fix: one 418 is a failure


def test_wildcard_virtual_service_routes_services_without_their_own(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    _apply(
        mesh,
        mesh_policies,
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything-else}
spec:
  hosts: ["*.default.svc.cluster.local"]
  http:
  - route:
    - destination: {host: echo, subset: v2}
""",
    )
    client = mesh.from_pod("productpage")
    unclaimed = client.get("http://productpage:9080/health")  # productpage has no mesh VirtualService
    assert unclaimed.status == 200 and (unclaimed.json["service"], unclaimed.json["version"]) == ("echo", "v2")
    claimed = client.get("http://details:9080/details")  # details has its own: the exact host wins
    assert claimed.status == 200 and claimed.json["service"] == "details"


def test_gateway_serves_only_its_servers_hosts_for_a_star_virtual_service(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    bookinfo = next(v for v in mesh.config.virtual_services if v.name == "bookinfo")
    mesh_policies(replace(mesh.config, VirtualService.model_validate({**bookinfo.model_dump(), "hosts": ["*"]})))
    assert mesh.ingress(HOST).get("/productpage").status == 200
    assert mesh.ingress("unknown.example.com").get("/productpage").status == 404
