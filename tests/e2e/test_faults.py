"""Fault injection: aborts fire at the stated fraction, delays add the stated latency."""

from __future__ import annotations

from collections.abc import Callable

from mesh.api import HTTPRoute, MeshConfig, VirtualService, helpers
from mesh.harness.stats import assert_fraction
from mesh.harness.targets import MeshUnderTest

from .conftest import replace


def test_header_triggered_abort_on_ratings(mesh: MeshUnderTest) -> None:
    """dev policy: `x-chaos: abort` makes ratings answer 503 (fired at reviews' sidecar)."""
    r = mesh.ingress("bookinfo.local").get("/productpage", {"end-user": "jason", "x-chaos": "abort"})
    assert r.status == 200  # the page survives a broken ratings
    ratings = r.call("reviews")["body"]["calls"][0]
    assert ratings["status"] == 503
    assert ratings["text"].startswith("fault filter abort")


def test_header_triggered_delay_on_ratings(mesh: MeshUnderTest) -> None:
    r = mesh.ingress("bookinfo.local").get("/productpage", {"end-user": "jason", "x-chaos": "delay"})
    ratings = r.call("reviews")["body"]["calls"][0]
    assert ratings["status"] == 200
    assert ratings["ms"] >= 1000, ratings


def test_abort_percentage(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    vs = VirtualService(
        name="echo", hosts=["echo"], http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=helpers.abort(418, 30.0))]
    )
    mesh_policies(replace(mesh.config, vs))
    client = mesh.from_pod("productpage")
    n = 400
    aborted = sum(client.get("http://echo:9080/fault").status == 418 for _ in range(n))
    assert_fraction(aborted, n, 0.30, "aborted share")


def test_fixed_delay_percentage(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    vs = VirtualService(
        name="echo",
        hosts=["echo"],
        http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=helpers.delay("250ms", 50.0))],
    )
    mesh_policies(replace(mesh.config, vs))
    client = mesh.from_pod("productpage")
    n = 60
    elapsed = [client.get("http://echo:9080/delayed").elapsed for _ in range(n)]
    slow = [e for e in elapsed if e >= 0.25]
    assert all(e < 0.2 for e in elapsed if e < 0.25), "undelayed requests must stay fast"
    assert_fraction(len(slow), n, 0.5, "delayed share")
