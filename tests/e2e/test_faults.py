"""Fault injection: aborts fire at the stated fraction, delays add the stated latency."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mesh.api import HTTPRoute, MeshConfig, VirtualService, helpers
from mesh.harness.stats import assert_sequential_fraction
from mesh.harness.under_test import MeshUnderTest

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
    assert ratings["ms"] >= 950, ratings  # the policy's 1 s delay; Envoy's timers may fire a few ms early


def test_abort_percentage(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    vs = VirtualService(
        name="echo", hosts=["echo"], http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=helpers.abort(418, 30.0))]
    )
    mesh_policies(replace(mesh.config, vs))
    client = mesh.from_pod("productpage")
    # false failure <= 1e-6; a 25% or 35% abort rate passes with probability <= 0.01
    assert_sequential_fraction(lambda: client.get("http://echo:9080/fault").status == 418, 0.30, "aborted share")


def test_fixed_delay_percentage(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    delay = 0.25
    vs = VirtualService(
        name="echo",
        hosts=["echo"],
        http=[HTTPRoute(route=[helpers.to("echo", "v1")], fault=helpers.delay(f"{delay * 1000:.0f}ms", 50.0))],
    )
    mesh_policies(replace(mesh.config, vs))
    client = mesh.from_pod("productpage")
    # false failure <= 1e-6; a delayed share of 35% or 65% passes with probability <= 0.01 (15 points: each
    # delayed request costs 250 ms, so requests go out 8 at a time and the test stops when decisive)
    slow: list[float] = []
    fast: list[float] = []
    pool = ThreadPoolExecutor(8)
    pending: list[float] = []

    def delayed() -> bool:
        if not pending:
            pending.extend(pool.map(lambda _: client.get("http://echo:9080/delayed").elapsed, range(8)))
        e = pending.pop()
        # Two populations, split at half the delay: Envoy's timers fire a few ms early against our clock, and
        # a busy machine slows undelayed requests, so neither bound can sit right at the delay itself.
        (slow if e >= delay / 2 else fast).append(e)
        return e >= delay / 2

    try:
        assert_sequential_fraction(delayed, 0.5, "delayed share", deviation=0.15)
    finally:
        pool.shutdown()
    assert all(e >= delay * 0.95 for e in slow), f"slowed, but by less than the {delay}s delay: {sorted(slow)[:5]}"
