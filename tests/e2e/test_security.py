"""mTLS (judged by the caller identity the callee sees, as Istio's tests do via XFCC) and authorization."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from mesh.api import MeshConfig, PeerAuthentication, PeerAuthenticationMTLS, WorkloadSelector
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace


def test_mesh_traffic_carries_the_callers_spiffe_identity(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get("http://echo:9080/whoami")
    assert r.json["peer"] == "spiffe://cluster.local/ns/default/sa/productpage"
    page = mesh.ingress("bookinfo.local").get("/productpage")
    assert page.json["peer"] == mesh.gateway_identity


def test_strict_mtls_refuses_plaintext_clients(mesh: MeshUnderTest) -> None:
    with pytest.raises(requests.ConnectionError):
        mesh.plaintext_to("echo").get("/")


def test_permissive_accepts_plaintext_and_mtls(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    pa = PeerAuthentication(
        name="echo-permissive",
        selector=WorkloadSelector(match_labels={"app": "echo"}),
        mtls=PeerAuthenticationMTLS(mode="PERMISSIVE"),
    )
    mesh_policies(replace(mesh.config, pa))
    legacy = mesh.plaintext_to("echo").get("/")
    assert legacy.status == 200 and legacy.json["peer"] is None
    assert mesh.from_pod("productpage").get("http://echo:9080/").json["peer"].endswith("/sa/productpage")


def test_disable_sends_plaintext_inside_the_mesh(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    pa = PeerAuthentication(
        name="echo-off",
        selector=WorkloadSelector(match_labels={"app": "echo"}),
        mtls=PeerAuthenticationMTLS(mode="DISABLE"),
    )
    mesh_policies(replace(mesh.config, pa))
    r = mesh.from_pod("productpage").get("http://echo:9080/")
    assert r.status == 200 and r.json["peer"] is None  # auto mTLS follows the server's mode


def test_ratings_only_answers_reviews(mesh: MeshUnderTest) -> None:
    denied = mesh.from_pod("productpage").get("http://ratings:9080/ratings")
    assert denied.status == 403 and denied.text == "RBAC: access denied"
    allowed = mesh.from_pod("reviews-v2-0").get("http://ratings:9080/ratings")
    assert allowed.status == 200


def test_details_allows_get_only(mesh: MeshUnderTest) -> None:
    client = mesh.from_pod("productpage")
    assert client.get("http://details:9080/details").status == 200
    assert client.request("POST", "http://details:9080/details").status == 403
    assert mesh.from_pod("reviews-v1-0").get("http://details:9080/details").status == 403
