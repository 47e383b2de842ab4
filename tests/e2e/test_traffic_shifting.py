"""Canary weights: observed splits match the VirtualService weights.

Sequential tests (mesh.verify.stats): a correct mesh fails with probability <= 1e-6, a split off by 5 points or
more passes with probability <= 0.01; each stops as soon as the evidence is decisive."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from mesh.api import MeshConfig, VirtualService, helpers
from mesh.harness.stats import assert_sequential_split
from mesh.harness.under_test import MeshUnderTest

from .conftest import replace


def reviews_version(mesh: MeshUnderTest, headers: dict[str, str] | None = None) -> Callable[[], str]:
    client = mesh.ingress("bookinfo.local")
    return lambda: str(client.get("/productpage", headers).call("reviews")["body"]["version"])


def reviews_versions(mesh: MeshUnderTest, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    client = mesh.ingress("bookinfo.local")
    return Counter(client.get("/productpage", headers).call("reviews")["body"]["version"] for _ in range(n))


def test_reviews_canary_50_50(mesh: MeshUnderTest) -> None:
    assert_sequential_split(reviews_version(mesh), {"v1": 50, "v3": 50}, parallel=4)


def test_echo_split_90_10_from_inside_the_mesh(mesh: MeshUnderTest) -> None:
    client = mesh.from_pod("productpage")
    assert_sequential_split(lambda: str(client.get("http://echo:9080/split").json["version"]), {"v1": 90, "v2": 10})


def test_live_reweighting_takes_effect_without_restarts(
    mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    base = mesh.config
    restarts_before = mesh.restarts()
    for weight in (100, 0, 20):
        canary = helpers.header_ab(
            "reviews",
            header="end-user",
            value="jason",
            match_subset="v2",
            default=helpers.split("reviews", {"v1": 100 - weight, "v3": weight}, name="canary"),
        )
        mesh_policies(replace(base, canary))
        assert_sequential_split(reviews_version(mesh), {"v1": 100 - weight, "v3": weight}, parallel=4)
    assert mesh.restarts() == restarts_before  # config moved, no process did


def test_all_traffic_to_one_subset(mesh: MeshUnderTest, mesh_policies: Callable[[MeshConfig], None]) -> None:
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {"v2": 100})])
    mesh_policies(replace(mesh.config, vs))
    assert reviews_versions(mesh, 50) == Counter({"v2": 50})
