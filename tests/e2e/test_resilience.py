"""Retries, per-try timeouts, timeouts, load balancing and outlier detection, against a deterministic upstream."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable

from mesh.api import ConsistentHashLB, DestinationRule, LoadBalancerSettings, MeshConfig, Subset, TrafficPolicy
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace

ECHO = "http://echo:9080"


def _rid() -> dict[str, str]:
    return {"x-request-id": str(uuid.uuid4())}


def test_retries_recover_from_transient_503s(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get(f"{ECHO}/retry", {**_rid(), "x-fail-times": "2"})
    assert r.status == 200
    assert r.json["attempt"] == 3  # two failures retried, the third attempt answered


def test_attempts_zero_disables_retries(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get(f"{ECHO}/noretry", {**_rid(), "x-fail-times": "1"})
    assert r.status == 503


def test_istio_default_retry_policy_does_not_retry_503(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get(f"{ECHO}/plain", {**_rid(), "x-fail-times": "1"})
    assert r.status == 503


def test_per_try_timeout_retries_a_slow_attempt(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get(f"{ECHO}/retry", {**_rid(), "x-delay-first-ms": "2000"})
    assert r.status == 200
    assert r.json["attempt"] == 2
    assert r.elapsed < 1.5  # the 2 s first attempt was abandoned after its 300 ms per-try timeout


def test_route_timeout(mesh: MeshUnderTest) -> None:
    r = mesh.from_pod("productpage").get(f"{ECHO}/timeout", {"x-delay-ms": "1000"})
    assert r.status == 504
    assert "upstream request timeout" in r.text
    assert 0.18 <= r.elapsed < 0.9  # Envoy timers may fire a few ms early against our clock


def test_round_robin_spreads_evenly(mesh: MeshUnderTest) -> None:
    client = mesh.from_pod("productpage")
    pods = Counter(client.get(f"{ECHO}/lb").json["pod"] for _ in range(60))
    assert set(pods) == set(mesh.pods("echo")) - {p for p in mesh.pods("echo") if "-v2-" in p}
    assert max(pods.values()) - min(pods.values()) <= 2, pods


USERS = 40


def test_consistent_hash_pins_a_user_to_one_pod(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    dr = DestinationRule(
        name="echo",
        host="echo",
        traffic_policy=TrafficPolicy(
            load_balancer=LoadBalancerSettings(consistent_hash=ConsistentHashLB(http_header_name="x-user"))
        ),
        subsets=[
            Subset(name="v1", labels={"version": "v1"}),
            Subset(name="v2", labels={"version": "v2"}),
            Subset(name="ejecting", labels={"version": "v1"}),
        ],
    )
    mesh_policies(replace(mesh.config, dr))
    client = mesh.from_pod("productpage")
    pinned: dict[str, str] = {}
    for i in range(USERS):
        user = f"user-{i}"
        pods = {client.get(f"{ECHO}/lb", {"x-user": user}).json["pod"] for _ in range(4)}
        assert len(pods) == 1, (user, pods)
        pinned[user] = pods.pop()
    # and the hash spreads users: with 40 users hashed uniformly over k <= 3 pods, some pod gets none with
    # probability <= 3 * (2/3)^40 < 1e-6; a ring that sent everyone to one pod fails every time
    v1_pods = {p for p in mesh.pods("echo") if "-v2-" not in p}
    assert set(pinned.values()) == v1_pods, Counter(pinned.values())


def test_outlier_detection_ejects_a_failing_replica(mesh: MeshUnderTest) -> None:
    client = mesh.from_pod("productpage")
    bad = sorted(p for p in mesh.pods("echo") if "-v1-" in p)[0]
    first = [client.get(f"{ECHO}/outlier", {"x-fail-pod": bad}) for _ in range(12)]
    assert any(r.status == 503 for r in first), "the failing pod should have been hit before its ejection"
    after = [client.get(f"{ECHO}/outlier", {"x-fail-pod": bad}) for _ in range(30)]
    assert [r.status for r in after] == [200] * 30
    assert bad not in {r.json["pod"] for r in after}
    stats = mesh.proxy_stats("productpage", r"outlier_detection\.ejections_enforced_total")
    ejecting = {k: v for k, v in stats.items() if "|ejecting|echo." in k}
    assert sum(ejecting.values()) >= 1, stats
