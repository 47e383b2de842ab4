"""The Sidecar resource under transparent interception: a workload's Sidecar with `outboundTrafficPolicy:
REGISTRY_ONLY` blocks both unknown destinations and mesh services its egress hosts do not list, while another
workload keeps the mesh default (ALLOW_ANY) and the whole mesh."""

from __future__ import annotations

import pytest

from mesh.api.sidecar import IstioEgressListener, OutboundTrafficPolicy, Sidecar, SidecarWorkloadSelector
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.local.podclient import PodClient

from ..conftest import replace
from .conftest import external_server

pytestmark = pytest.mark.e2e

FQDN = "{}.default.svc.cluster.local"


def _namespace(m: LocalMeshUnderTest, name: str) -> str:
    assert m.mesh.capture is not None
    return m.mesh.capture.namespace(next(p for p in m.mesh.registry.pods if p.name == name).name)


def test_a_registry_only_sidecar_blocks_what_its_scope_does_not_list(captured: LocalMeshUnderTest) -> None:
    productpage, reviews = _namespace(captured, "productpage-v1-0"), _namespace(captured, "reviews-v1-0")
    scope = Sidecar(
        name="productpage",
        workload_selector=SidecarWorkloadSelector(labels={"app": "productpage"}),
        egress=[IstioEgressListener(hosts=[f"./{FQDN.format('reviews')}", f"./{FQDN.format('details')}"])],
        outbound_traffic_policy=OutboundTrafficPolicy(mode="REGISTRY_ONLY"),
    )
    original = captured.config
    with external_server(captured) as ip:
        assert PodClient(productpage).get(f"http://{ip}:8000/").status == 200  # the mesh default: ALLOW_ANY
        assert PodClient(productpage).get("http://echo:9080/").status == 200
        captured.apply(replace(original, scope))  # returns once every proxy ACKed
        try:
            with pytest.raises(OSError):  # virtualOutbound -> BlackHoleCluster: the connection is closed
                PodClient(productpage, timeout=5).get(f"http://{ip}:8000/")
            blocked = PodClient(productpage).get("http://echo:9080/")  # a mesh service outside the scope
            assert blocked.status == 502, blocked.text[:200]  # Istio's block_all catch-all on the port's routes
            assert PodClient(productpage).get("http://reviews:9080/").status == 200  # in scope
            assert PodClient(reviews).get(f"http://{ip}:8000/").status == 200  # another workload: ALLOW_ANY
            assert PodClient(reviews).get("http://echo:9080/").status == 200
        finally:
            captured.apply(original)
        assert PodClient(productpage).get(f"http://{ip}:8000/").status == 200
