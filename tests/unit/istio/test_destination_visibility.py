"""DestinationRule exportTo in Istio's choice of rule for a client namespace."""

from __future__ import annotations

from mesh.api import DestinationRule
from mesh.istio import pick_destination_rule


def test_export_to_limits_which_namespaces_pick_a_rule() -> None:
    local = DestinationRule(name="r", namespace="default", host="reviews", export_to=["."])
    assert pick_destination_rule([local], "default") is local
    assert pick_destination_rule([local], "istio-system") is None
    shared = DestinationRule(name="r", namespace="shared", host="reviews.default.svc.cluster.local", export_to=["team"])
    assert pick_destination_rule([local, shared], "team") is shared
    assert pick_destination_rule([local, shared], "other") is None
    own = DestinationRule(name="o", namespace="team", host="reviews.default.svc.cluster.local", export_to=["x"])
    assert pick_destination_rule([shared, own], "team") is own  # its own namespace always sees a rule
