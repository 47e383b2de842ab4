"""The typed API rejects what Istio would reject, and names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mesh.api import (
    Abort,
    DestinationRule,
    HTTPRoute,
    MeshConfig,
    OutlierDetection,
    PeerAuthentication,
    PeerAuthenticationMTLS,
    Service,
    StringMatch,
    Version,
    VirtualService,
    helpers,
    parse_duration,
    resolve_host,
)
from mesh.istio import destination_rule_for


def test_unknown_field_is_rejected_with_its_path() -> None:
    with pytest.raises(ValidationError) as e:
        VirtualService.model_validate(
            {"name": "r", "hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "wieght": 3}]}]}
        )
    assert e.value.errors()[0]["loc"] == ("http", 0, "route", 0, "wieght")
    assert e.value.errors()[0]["type"] == "extra_forbidden"


def test_wire_names_are_istios() -> None:
    od = OutlierDetection(consecutive_5xx_errors=3, base_ejection_time="30s")
    assert od.to_istio() == {"consecutive5xxErrors": 3, "baseEjectionTime": "30s"}
    assert OutlierDetection.model_validate({"consecutive5xxErrors": 7}).consecutive_5xx_errors == 7


@pytest.mark.parametrize("fields", [{}, {"exact": "a", "prefix": "b"}])
def test_string_match_is_one_of(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="exactly one of exact, prefix or regex"):
        StringMatch(**fields)


def test_abort_needs_exactly_one_status() -> None:
    with pytest.raises(ValidationError, match="exactly one of httpStatus, grpcStatus or http2Error"):
        Abort()


def test_rule_needs_route_or_redirect() -> None:
    with pytest.raises(ValidationError, match="needs a route"):
        HTTPRoute()


@pytest.mark.parametrize(
    "text,seconds", [("2s", 2.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5s", 1.5), ("100us", 1e-4)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["2", "two seconds", "-1s", "1d"])
def test_bad_durations_are_rejected_where_they_are_declared(bad: str) -> None:
    with pytest.raises(ValidationError, match="is not a duration"):
        HTTPRoute(route=[helpers.to("a")], timeout=bad)


def test_names_must_be_kubernetes_names() -> None:
    with pytest.raises(ValidationError, match="not a valid Kubernetes name"):
        DestinationRule(name="Reviews_DR", host="reviews")


def test_port_level_mtls_needs_selector() -> None:
    with pytest.raises(ValidationError, match="needs a workload selector"):
        PeerAuthentication(name="x", port_level_mtls={8080: PeerAuthenticationMTLS(mode="DISABLE")})


def test_service_identity_and_fqdn() -> None:
    svc = Service(name="reviews", namespace="shop", service_account="bookinfo-reviews", versions=[Version(name="v1")])
    assert svc.fqdn == "reviews.shop.svc.cluster.local"
    assert svc.identity == "spiffe://cluster.local/ns/shop/sa/bookinfo-reviews"


def test_duplicate_versions_rejected() -> None:
    with pytest.raises(ValidationError, match="duplicate version"):
        Service(name="a", versions=[Version(name="v1"), Version(name="v1")])


def test_short_names_resolve_like_istio() -> None:
    assert resolve_host("reviews", "shop") == "reviews.shop.svc.cluster.local"
    assert resolve_host("reviews.shop.svc.cluster.local", "x") == "reviews.shop.svc.cluster.local"
    assert resolve_host("example.com", "x") == "example.com"


def test_resources_remember_where_they_were_declared() -> None:
    vs = helpers.canary("reviews", stable="v1", candidate="v2", weight=10)
    assert vs.source is not None
    assert vs.source.file.endswith("test_models.py")


def test_helpers_produce_plain_objects() -> None:
    gw, vs = helpers.ingress("shop", hosts=["shop.example.com"], routes={"/": "frontend"})
    assert gw.servers[0].port.protocol == "HTTP"
    assert vs.gateways == ["shop"]
    assert vs.http[0].match[0].uri == StringMatch(prefix="/")
    canary = helpers.canary("reviews", stable="v1", candidate="v2", weight=10)
    assert [(d.destination.subset, d.weight) for d in canary.http[0].route] == [("v1", 90), ("v2", 10)]
    with pytest.raises(ValueError, match="between 0 and 100"):
        helpers.canary("reviews", stable="v1", candidate="v2", weight=120)


def test_mesh_config_picks_destination_rule_in_client_namespace_first() -> None:
    config = MeshConfig().add(
        DestinationRule(name="a", namespace="shop", host="reviews.default.svc.cluster.local"),
        DestinationRule(name="b", namespace="default", host="reviews"),
    )
    rule = destination_rule_for(config.destination_rules, "reviews.default.svc.cluster.local", "shop")
    assert rule is not None and rule.name == "a"
