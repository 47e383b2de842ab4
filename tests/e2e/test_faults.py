"""Fault injection: aborts fire at the stated fraction, delays add the stated latency."""

from __future__ import annotations

import random
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
    # Which requests were delayed is counted by the caller's sidecar (the fault filter's `delays_injected`), not
    # guessed from latency: on a loaded machine an undelayed request can take longer than a split point below the
    # delay. Requests go out 8 at a time (each delayed one costs 250 ms); a batch with k delays feeds k successes
    # and 8-k failures in a random order, which given k has the same distribution as the batch's own order, so the
    # sequential test keeps its error rates: false failure <= 1e-6; a delayed share of 35% or 65% passes with
    # probability <= 0.01 (15 points), and it stops when decisive.
    injected = r"\.fault\.delays_injected$"
    pool = ThreadPoolExecutor(8)
    pending: list[bool] = []
    too_fast: list[list[float]] = []
    counted = [
        sum(mesh.proxy_stats("productpage", injected).values())
    ]  # one admin read per batch: its end is the next's start

    def batch() -> None:
        elapsed = sorted(pool.map(lambda _: client.get("http://echo:9080/delayed").elapsed, range(8)), reverse=True)
        counted.append(sum(mesh.proxy_stats("productpage", injected).values()))
        k = counted[-1] - counted[-2]
        assert 0 <= k <= 8, f"{k} delays counted for 8 requests"
        # every delayed request took at least the delay (Envoy's timers may fire a few ms early against our clock)
        if k and elapsed[k - 1] < delay * 0.95:
            too_fast.append(elapsed)
        outcomes = [True] * k + [False] * (8 - k)
        random.shuffle(outcomes)
        pending.extend(outcomes)

    def delayed() -> bool:
        if not pending:
            batch()
        return pending.pop()

    try:
        assert_sequential_fraction(delayed, 0.5, "delayed share", deviation=0.15)
    finally:
        pool.shutdown()
    assert not too_fast, f"fewer requests slowed by the {delay}s delay than delays counted: {too_fast[:3]}"
