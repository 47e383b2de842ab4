"""Istio's rules as tables: host matching, gateway binding, PeerAuthentication precedence, DestinationRule choice."""

from __future__ import annotations

import pytest

from mesh.api import DestinationRule, Gateway, HTTPRoute, Port, Server, VirtualService, WorkloadSelector
from mesh.api.helpers import to
from mesh.api.security import MTLSMode, PeerAuthentication, PeerAuthenticationMTLS
from mesh.istio import (
    DEFAULT_MTLS_MODE,
    MESH_GATEWAY,
    ROOT_NAMESPACE,
    binds_gateway,
    binds_mesh,
    destination_rule_for,
    effective_peer_authentication,
    gateway_hosts,
    gateway_ref,
    host_matches,
    mtls_mode,
    resolve_host,
    served_hosts,
    server_host,
    visible_hosts,
)


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", True),
        ("reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local", False),
        ("*", "anything.example.com", True),
        ("anything.example.com", "*", True),
        ("*.example.com", "shop.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),  # the wildcard needs a label in front
        ("*.example.com", "shop.example.org", False),
        ("*.example.com", "*.example.com", True),
        ("*.example.com", "*.shop.example.com", True),
        ("*.shop.example.com", "*.example.com", False),
        ("shop.example.com", "*.example.com", True),  # symmetric: a wildcard VirtualService host meets a server host
        ("example.com", "*.example.com", False),
        ("shop.example.com", "shop.example.com.evil", False),
    ],
)
def test_host_matches(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


@pytest.mark.parametrize(
    ("host", "namespace", "fqdn"),
    [
        ("reviews", "shop", "reviews.shop.svc.cluster.local"),
        ("reviews.default.svc.cluster.local", "shop", "reviews.default.svc.cluster.local"),
        ("example.com", "shop", "example.com"),
        ("*.example.com", "shop", "*.example.com"),
    ],
)
def test_resolve_host(host: str, namespace: str, fqdn: str) -> None:
    assert resolve_host(host, namespace) == fqdn


@pytest.mark.parametrize(
    ("ref", "namespace", "normalised"),
    [
        ("web", "shop", "shop/web"),
        ("istio-system/web", "shop", "istio-system/web"),
        (MESH_GATEWAY, "shop", MESH_GATEWAY),
    ],
)
def test_gateway_ref(ref: str, namespace: str, normalised: str) -> None:
    assert gateway_ref(ref, namespace) == normalised


def _gateway(namespace: str, *hosts: str) -> Gateway:
    return Gateway(
        name="web",
        namespace=namespace,
        selector={"istio": "ingressgateway"},
        servers=[Server(port=Port(number=80, name="http", protocol="HTTP"), hosts=list(hosts))],
    )


@pytest.mark.parametrize(
    ("server_host", "gateway_namespace", "vs_namespace", "visible"),
    [
        ("shop.example.com", "istio-system", "shop", ["shop.example.com"]),  # bare host: every namespace
        ("*/shop.example.com", "istio-system", "shop", ["shop.example.com"]),
        ("shop/shop.example.com", "istio-system", "shop", ["shop.example.com"]),
        ("shop/shop.example.com", "istio-system", "blog", []),
        ("./shop.example.com", "shop", "shop", ["shop.example.com"]),  # `.`: the gateway's own namespace
        ("./shop.example.com", "istio-system", "shop", []),
    ],
)
def test_visible_hosts(server_host: str, gateway_namespace: str, vs_namespace: str, visible: list[str]) -> None:
    assert visible_hosts([server_host], gateway_namespace, vs_namespace) == visible
    assert gateway_hosts(_gateway(gateway_namespace, server_host), vs_namespace) == visible


def test_served_hosts_keeps_virtual_service_order_and_matches_wildcards() -> None:
    visible = ["*.example.com", "api.example.org"]
    assert served_hosts(["b.example.com", "x.example.net", "api.example.org", "a.example.com"], visible) == [
        "b.example.com",
        "api.example.org",
        "a.example.com",
    ]


@pytest.mark.parametrize(
    ("gateways", "mesh", "web"),
    [
        ([], True, False),
        ([MESH_GATEWAY], True, False),
        (["web"], False, True),
        (["istio-system/web"], False, False),  # the gateway lives in `shop`, not istio-system
        (["shop/web", MESH_GATEWAY], True, True),
    ],
)
def test_binding(gateways: list[str], mesh: bool, web: bool) -> None:
    vs = VirtualService(
        name="r",
        namespace="shop",
        hosts=["shop.example.com"],
        gateways=gateways,
        http=[HTTPRoute(route=[to("reviews")])],
    )
    assert binds_mesh(vs) is mesh
    assert binds_gateway(vs, _gateway("shop", "*")) is web


def _pa(name: str, namespace: str, mode: MTLSMode | None, selector: dict[str, str] | None = None) -> PeerAuthentication:
    return PeerAuthentication(
        name=name,
        namespace=namespace,
        selector=WorkloadSelector(match_labels=selector) if selector else None,
        mtls=PeerAuthenticationMTLS(mode=mode) if mode else None,
    )


LABELS = {"app": "reviews", "version": "v1"}
MESH_STRICT = _pa("default", ROOT_NAMESPACE, "STRICT")
NS_PERMISSIVE = _pa("default", "shop", "PERMISSIVE")
WORKLOAD_DISABLE = _pa("reviews", "shop", "DISABLE", {"app": "reviews"})


@pytest.mark.parametrize(
    ("policies", "namespace", "expected"),
    [
        ([], "shop", DEFAULT_MTLS_MODE),
        ([MESH_STRICT], "shop", "STRICT"),
        ([MESH_STRICT, NS_PERMISSIVE], "shop", "PERMISSIVE"),  # namespace-wide beats mesh-wide
        ([MESH_STRICT, NS_PERMISSIVE, WORKLOAD_DISABLE], "shop", "DISABLE"),  # workload selector beats both
        ([MESH_STRICT, NS_PERMISSIVE, WORKLOAD_DISABLE], "blog", "STRICT"),  # other namespaces' policies do not apply
        ([_pa("other", "shop", "DISABLE", {"app": "ratings"}), MESH_STRICT], "shop", "STRICT"),  # selector misses
        ([_pa("default", "shop", "UNSET"), MESH_STRICT], "shop", "STRICT"),  # UNSET inherits from the next level
        ([_pa("default", "shop", None), MESH_STRICT], "shop", "STRICT"),  # no mtls block: inherits as well
        ([_pa("b", "shop", "DISABLE"), _pa("a", "shop", "STRICT")], "shop", "STRICT"),  # a tie goes by name
        ([_pa("scoped", ROOT_NAMESPACE, "DISABLE", {"app": "reviews"}), MESH_STRICT], "shop", "STRICT"),
    ],
)
def test_mtls_precedence(policies: list[PeerAuthentication], namespace: str, expected: str) -> None:
    assert mtls_mode(policies, namespace, LABELS) == expected


def test_port_level_mtls_overrides_the_effective_policy_on_that_port_only() -> None:
    pa = PeerAuthentication(
        name="reviews",
        namespace="shop",
        selector=WorkloadSelector(match_labels={"app": "reviews"}),
        mtls=PeerAuthenticationMTLS(mode="STRICT"),
        port_level_mtls={9080: PeerAuthenticationMTLS(mode="DISABLE"), 9090: PeerAuthenticationMTLS(mode="UNSET")},
    )
    assert mtls_mode([pa], "shop", LABELS, 9080) == "DISABLE"
    assert mtls_mode([pa], "shop", LABELS, 9090) == "STRICT"
    assert mtls_mode([pa], "shop", LABELS, 8080) == "STRICT"
    assert mtls_mode([pa], "shop", LABELS) == "STRICT"
    assert effective_peer_authentication([pa, MESH_STRICT], "shop", LABELS) is pa


@pytest.mark.parametrize(
    ("host", "client_namespace", "expected"),
    [
        ("reviews.default.svc.cluster.local", "shop", "in-shop"),  # the client's namespace first
        ("reviews.default.svc.cluster.local", "default", "in-default"),
        ("reviews.default.svc.cluster.local", "blog", "in-default"),  # else by (namespace, name)
        ("reviews", "default", "in-default"),  # a short name resolves in the client's namespace
        ("reviews", "blog", None),  # reviews.blog is another host
        ("ratings.default.svc.cluster.local", "shop", None),
    ],
)
def test_destination_rule_choice(host: str, client_namespace: str, expected: str | None) -> None:
    rules = [
        DestinationRule(name="in-shop", namespace="shop", host="reviews.default.svc.cluster.local"),
        DestinationRule(name="in-default", namespace="default", host="reviews"),
        DestinationRule(name="z-default", namespace="default", host="reviews.default.svc.cluster.local"),
    ]
    rule = destination_rule_for(rules, host, client_namespace)
    assert (rule.name if rule else None) == expected


@pytest.mark.parametrize(
    ("ref", "host"),
    [
        ("shop.example.com", "shop.example.com"),
        ("*/shop.example.com", "shop.example.com"),
        ("./*", "*"),
        ("ns/a.b", "a.b"),
    ],
)
def test_server_host_drops_the_namespace_part(ref: str, host: str) -> None:
    assert server_host(ref) == host


# --- routing rules shared by translation and analysis (issue: fidelity) ------------------------------------------


@pytest.mark.parametrize(
    ("port", "service_ports", "listener", "expected"),
    [
        (9090, [9080, 9090], 9080, 9090),  # an explicit port wins
        (None, [9080], 80, 9080),  # the service's only port
        (None, [9080, 9090], 9090, 9090),  # several: the port the request came in on
        (None, [9080, 9090], 80, 80),  # ... even one the service lacks (IST0112 warns)
    ],
)
def test_destination_port(port: int | None, service_ports: list[int], listener: int, expected: int) -> None:
    from mesh.istio import destination_port

    assert destination_port(port, service_ports, listener) == expected


@pytest.mark.parametrize(
    ("server", "vs_hosts", "expected"),
    [
        (["foo.bar"], ["*"], ["foo.bar"]),
        (["*"], ["foo.bar"], ["foo.bar"]),
        (["*.example.com"], ["a.example.com", "b.example.org"], ["a.example.com"]),
        (["a.example.com"], ["*.example.com"], ["a.example.com"]),
        (["*.example.com"], ["*.shop.example.com"], ["*.shop.example.com"]),
        (["example.com"], ["*.example.com"], []),
        (["*"], ["*"], ["*"]),
    ],
)
def test_gateway_virtual_hosts_are_the_overlap(server: list[str], vs_hosts: list[str], expected: list[str]) -> None:
    from mesh.istio import intersect_hosts

    assert intersect_hosts(server, vs_hosts) == expected


def test_virtual_service_precedence_exact_then_most_specific_wildcard() -> None:
    from mesh.istio import mesh_virtual_services

    def vs(name: str, host: str, gateways: list[str] | None = None) -> VirtualService:
        return VirtualService(name=name, hosts=[host], gateways=gateways or [], http=[HTTPRoute(route=[to("x")])])

    fqdn = "reviews.default.svc.cluster.local"
    vss = [
        vs("a-all", "*"),
        vs("b-cluster", "*.cluster.local"),
        vs("c-exact", "reviews"),
        vs("d-gateway-only", "reviews", ["gw"]),
        vs("e-default", "*.default.svc.cluster.local"),
    ]
    claims = mesh_virtual_services(vss, [fqdn, "ratings.default.svc.cluster.local", "x.other.example"])
    assert [v.name for v in claims[fqdn]] == ["c-exact", "e-default", "b-cluster", "a-all"]
    assert [v.name for v in claims["ratings.default.svc.cluster.local"]] == ["e-default", "b-cluster", "a-all"]
    assert [v.name for v in claims["x.other.example"]] == ["a-all"]


@pytest.mark.parametrize(
    ("fault", "share", "fires"),
    [
        ({"abort": {"httpStatus": 503}}, None, False),  # Istio passes no percentage: never fires
        ({"delay": {"fixedDelay": "1s"}}, (0.0, True), False),  # the legacy integer, 0
        ({"delay": {"fixedDelay": "1s", "percent": 30}}, (30.0, True), True),
        ({"abort": {"httpStatus": 503, "percentage": {"value": 0.5}}}, (0.5, False), True),
        ({"abort": {"httpStatus": 503, "percentage": {"value": 0.0}}}, (0.0, False), False),
    ],
)
def test_fault_share(fault: dict[str, object], share: tuple[float, bool] | None, fires: bool) -> None:
    from mesh.api import HTTPFaultInjection
    from mesh.istio import FaultShare, fault_share
    from mesh.istio import fires as can_fire

    f = HTTPFaultInjection.model_validate(fault)
    inj = f.delay or f.abort
    assert inj is not None
    assert fault_share(inj) == (FaultShare(*share) if share else None)
    assert can_fire(inj) is fires


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", True),
        ("*.d", "*.productpage.d", True),
        ("*.productpage.d", "*.d", True),
        ("*.d", "productpage.d", False),  # an exact host under a wildcard: precedence, not a collision
        ("*.a.d", "*.b.d", False),
    ],
)
def test_hosts_overlap(a: str, b: str, overlap: bool) -> None:
    from mesh.istio import hosts_overlap

    assert hosts_overlap(a, b) is overlap


@pytest.mark.parametrize(
    ("export_to", "scope"),
    [([], None), (["*"], None), (["."], frozenset({"shop"})), ([".", "web"], frozenset({"shop", "web"}))],
)
def test_export_scope(export_to: list[str], scope: frozenset[str] | None) -> None:
    from mesh.istio import export_scope, scopes_overlap

    assert export_scope(export_to, "shop") == scope
    assert scopes_overlap(scope, frozenset({"shop"}))
    assert scopes_overlap(None, frozenset({"x"})) and not scopes_overlap(frozenset({"a"}), frozenset({"b"}))
