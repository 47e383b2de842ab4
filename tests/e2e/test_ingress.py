"""Ingress: the gateway routes by host and path; everything else is a 404."""

from __future__ import annotations

from mesh.harness.targets import MeshUnderTest

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
