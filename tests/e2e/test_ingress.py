"""Ingress: the gateway routes by host and path; everything else is a 404."""

from __future__ import annotations

from mesh.harness.under_test import MeshUnderTest

HOST = "bookinfo.local"


def test_productpage_shows_the_whole_call_chain(mesh: MeshUnderTest) -> None:
    r = mesh.ingress(HOST).get("/productpage")
    assert r.status == 200, r.text
    page = r.json
    assert (page["service"], page["version"]) == ("productpage", "v1")
    assert r.call("details")["status"] == 200
    reviews = r.call("reviews")
    assert reviews["status"] == 200 and reviews["body"]["service"] == "reviews"
    # one request id travels the whole chain
    assert reviews["body"]["request_id"] == page["request_id"] == r.call("details")["body"]["request_id"]


def test_second_host_and_prefix_route(mesh: MeshUnderTest) -> None:
    assert mesh.ingress("localhost").get("/productpage").status == 200
    assert mesh.ingress(HOST).get("/static/app.css").json["path"] == "/static/app.css"


def test_unknown_host_is_404(mesh: MeshUnderTest) -> None:
    r = mesh.ingress("unknown.example.com").get("/productpage")
    assert r.status == 404


def test_unrouted_path_is_404(mesh: MeshUnderTest) -> None:
    assert mesh.ingress(HOST).get("/admin").status == 404


def test_trace_headers_are_propagated(mesh: MeshUnderTest) -> None:
    trace = "463ac35c9f6413ad48485a3953bb6124"
    r = mesh.ingress(HOST).get(
        "/productpage", {"x-b3-traceid": trace, "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}
    )
    assert r.json["trace"]["x-b3-traceid"] == trace
    assert r.call("reviews")["body"]["trace"]["x-b3-traceid"] == trace


def test_cors_preflight_is_answered_by_the_gateway(mesh: MeshUnderTest, mesh_policies) -> None:  # type: ignore[no-untyped-def]
    from mesh.api import CorsPolicy, StringMatch, VirtualService

    from .conftest import replace

    base = next(vs for vs in mesh.config.virtual_services if vs.name == "bookinfo")
    rules = [
        r.model_copy(
            update={
                "cors_policy": CorsPolicy(
                    allow_origins=[StringMatch(exact="https://shop.example")],
                    allow_methods=["GET", "POST"],
                    max_age="1h",
                )
            }
        )
        for r in base.http
    ]
    mesh_policies(replace(mesh.config, VirtualService.model_validate({**base.model_dump(), "http": rules})))
    pre = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    r = mesh.ingress(HOST).request("OPTIONS", "/productpage", pre)
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-methods"] == "GET,POST" and r.headers["access-control-max-age"] == "3600"
    other = mesh.ingress(HOST).request("OPTIONS", "/productpage", {**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in other.headers}
