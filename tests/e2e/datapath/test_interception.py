"""Transparent interception as Istio builds it: nothing reaches an app except through its sidecar, and what a pod
sends leaves through its own sidecar, with no proxy settings in the app."""

from __future__ import annotations

from dataclasses import replace as dc_replace

import pytest

from mesh.api import PeerAuthentication, PeerAuthenticationMTLS, WorkloadSelector
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.local.podclient import PodClient

from ..conftest import replace
from .conftest import external_server

pytestmark = pytest.mark.e2e


def _pod(m: LocalMeshUnderTest, name: str) -> tuple[str, str]:
    """(ip, network namespace) of a pod."""
    pod = next(p for p in m.mesh.registry.pods if p.name == name)
    assert m.mesh.capture is not None
    return pod.ip, m.mesh.capture.namespace(pod.name)


def _stat(m: LocalMeshUnderTest, pod: str, name: str) -> int:
    return (
        m.mesh.admin(next(p for p in m.mesh.registry.pods if p.name == pod))
        .stats(name.replace(".", r"\."))
        .get(name, 0)
    )


def test_mesh_up_reports_the_mode(captured: LocalMeshUnderTest) -> None:
    assert captured.mesh.describe().interception == "iptables"
    assert all(p.netns for p in captured.mesh.describe().pods)


def test_apps_use_plain_service_names_through_their_sidecar(captured: LocalMeshUnderTest) -> None:
    """The sample app has no HTTP_PROXY here: productpage's calls are captured and carry its mTLS identity."""
    page = captured.ingress("bookinfo.local").get("/productpage")
    assert page.status == 200, page.text
    assert page.call("reviews")["body"]["peer"] == "spiffe://cluster.local/ns/default/sa/productpage"
    # virtualOutbound handed the captured connections to the per-port listener, which routed them by Host
    assert _stat(captured, "productpage-v1-0", "http.outbound_0.0.0.0_9080.downstream_rq_total") > 0


def test_a_direct_connection_to_an_app_is_captured_and_strict_mtls_refuses_it(captured: LocalMeshUnderTest) -> None:
    """reviews' app dials ratings' pod address itself: its own sidecar takes the connection (passthrough, since no
    service is addressed), and ratings' sidecar refuses the plaintext under STRICT; the ratings app sees nothing."""
    ratings_ip, _ = _pod(captured, "ratings-v1-0")
    _, reviews_ns = _pod(captured, "reviews-v1-0")
    refused = _stat(captured, "ratings-v1-0", "listener.0.0.0.0_15006.no_filter_chain_match")
    passed = _stat(captured, "reviews-v1-0", "cluster.PassthroughCluster.upstream_cx_total")
    r = PodClient(reviews_ns).get(f"http://{ratings_ip}:9080/ratings")
    assert r.status == 503, r.text
    assert _stat(captured, "ratings-v1-0", "listener.0.0.0.0_15006.no_filter_chain_match") > refused
    assert _stat(captured, "reviews-v1-0", "cluster.PassthroughCluster.upstream_cx_total") > passed


def test_under_permissive_a_direct_plaintext_call_meets_authorization(captured: LocalMeshUnderTest) -> None:
    """PERMISSIVE lets the plaintext connection in, but ratings allows only reviews' identity: a caller that
    bypasses its mesh identity is denied by ratings' sidecar (403), while the same pod through the mesh is let in."""
    pa = PeerAuthentication(
        name="ratings-permissive",
        selector=WorkloadSelector(match_labels={"app": "ratings"}),
        mtls=PeerAuthenticationMTLS(mode="PERMISSIVE"),
    )
    original = captured.config
    captured.apply(replace(original, pa))
    try:
        ratings_ip, _ = _pod(captured, "ratings-v1-0")
        _, reviews_ns = _pod(captured, "reviews-v1-0")
        direct = PodClient(reviews_ns).get(f"http://{ratings_ip}:9080/ratings")
        assert direct.status == 403 and "RBAC: access denied" in direct.text
        via_mesh = PodClient(reviews_ns).get("http://ratings:9080/ratings")
        assert via_mesh.status == 200 and via_mesh.json["peer"].endswith("/sa/reviews")
    finally:
        captured.apply(original)


def test_outbound_traffic_policy_allow_any_and_registry_only(captured: LocalMeshUnderTest) -> None:
    """An address the mesh does not know: ALLOW_ANY passes it through (port 8000: virtualOutbound's TCP
    passthrough), REGISTRY_ONLY sends it to the BlackHoleCluster, and an unknown Host on a mesh HTTP port gets 502."""
    pilot = captured.mesh.pilot
    _, ns = _pod(captured, "productpage-v1-0")
    with external_server(captured) as ip:
        assert PodClient(ns).get(f"http://{ip}:8000/").status == 200
        pilot.options = dc_replace(pilot.options, outbound_traffic_policy="REGISTRY_ONLY")
        try:
            captured.mesh.apply(captured.config)
            with pytest.raises(OSError):
                PodClient(ns, timeout=5).get(f"http://{ip}:8000/")
            assert PodClient(ns).get(f"http://{ip}:9080/", host="unknown.example").status == 502
        finally:
            pilot.options = dc_replace(pilot.options, outbound_traffic_policy="ALLOW_ANY")
            captured.mesh.apply(captured.config)
        assert PodClient(ns).get(f"http://{ip}:8000/").status == 200
