"""Header-based A/B: the end-user header picks the subset, through the whole chain."""

from __future__ import annotations

from collections import Counter

from mesh.harness.under_test import MeshUnderTest


def test_jason_always_sees_reviews_v2(mesh: MeshUnderTest) -> None:
    client = mesh.ingress("bookinfo.local")
    seen = Counter(
        client.get("/productpage", {"end-user": "jason"}).call("reviews")["body"]["version"] for _ in range(40)
    )
    assert seen == Counter({"v2": 40})


def test_other_users_never_see_v2(mesh: MeshUnderTest) -> None:
    client = mesh.ingress("bookinfo.local")
    seen = Counter(
        client.get("/productpage", {"end-user": "maria"}).call("reviews")["body"]["version"] for _ in range(60)
    )
    assert "v2" not in seen and set(seen) <= {"v1", "v3"}


def test_reviews_v2_calls_ratings(mesh: MeshUnderTest) -> None:
    r = mesh.ingress("bookinfo.local").get("/productpage", {"end-user": "jason"})
    ratings = r.call("reviews")["body"]["calls"][0]
    assert ratings["status"] == 200 and ratings["body"]["service"] == "ratings"
