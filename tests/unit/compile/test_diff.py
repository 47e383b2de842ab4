"""The diff `mesh apply` shows: added, removed and changed objects, with the changed fields."""

from __future__ import annotations

from mesh.api import MeshConfig, VirtualService, helpers
from mesh.compile import build_policies
from mesh.compile.diff import diff_configs


def test_dev_to_prod() -> None:
    changes = {(c.op, c.ref): c for c in diff_configs(build_policies("dev"), build_policies("prod"))}
    assert ("~", "VirtualService default/reviews") in changes
    patch = changes[("~", "VirtualService default/reviews")].patch
    assert "-      weight: 50" in patch and "+      weight: 90" in patch
    assert ("~", "Gateway default/bookinfo") in changes
    assert all(op == "~" for op, _ in changes)


def test_added_and_removed() -> None:
    a = helpers.canary("reviews", stable="v1", candidate="v2", weight=10)
    b = VirtualService(name="ratings", hosts=["ratings"], http=[helpers.split("ratings", {"v1": 100})])
    changes = [(c.op, c.ref) for c in diff_configs(MeshConfig(resources=[a]), MeshConfig(resources=[b]))]
    assert changes == [("+", "VirtualService default/ratings"), ("-", "VirtualService default/reviews")]


def test_identical_configs_have_no_changes() -> None:
    assert diff_configs(build_policies("dev"), build_policies("dev")) == []
