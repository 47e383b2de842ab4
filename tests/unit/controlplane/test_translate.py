"""Translation, proved offline: route choice by simulation, cluster policy field by field (Istio's mapping)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.v3 import percent_pb2

from mesh.api import (
    ConnectionPoolSettings,
    DestinationRule,
    HTTPRoute,
    HTTPSettings,
    MeshConfig,
    OutlierDetection,
    PeerAuthentication,
    PeerAuthenticationMTLS,
    Subset,
    TCPSettings,
    TrafficPolicy,
    VirtualService,
    WorkloadSelector,
    helpers,
)
from mesh.controlplane.simulate import route
from mesh.controlplane.xds import resources as rt

from .conftest import World

REVIEWS = "reviews.default.svc.cluster.local"


def _routes(world: World, proxy_name: str = "productpage-v1-0") -> route_pb2.RouteConfiguration:
    snap = world.snapshot(world.sidecar(proxy_name) if proxy_name != "gateway" else world.gateway)
    (cfg,) = snap.resources(rt.ROUTE).items.values()
    assert isinstance(cfg, route_pb2.RouteConfiguration)
    return cfg


def _clusters(world: World, proxy_name: str = "productpage-v1-0") -> dict[str, cluster_pb2.Cluster]:
    snap = world.snapshot(world.sidecar(proxy_name))
    return {n: c for n, c in snap.resources(rt.CLUSTER).items.items() if isinstance(c, cluster_pb2.Cluster)}


def _with(world: World, *resources: object) -> World:
    keys = {r.key for r in resources}  # type: ignore[attr-defined]
    cfg = MeshConfig(services=world.config.services, resources=[r for r in world.config.resources if r.key not in keys])
    cfg.add(*resources)  # type: ignore[arg-type]
    return World(cfg)


def test_header_rule_then_weighted_canary(world: World) -> None:
    cfg = _routes(world)
    jason = route(cfg, "reviews:9080", "/reviews", {"end-user": "jason"})
    assert jason is not None and jason.clusters == {f"outbound|9080|v2|{REVIEWS}": 100}
    other = route(cfg, "reviews:9080", "/reviews")
    assert other is not None and other.clusters == {
        f"outbound|9080|v1|{REVIEWS}": 50,
        f"outbound|9080|v3|{REVIEWS}": 50,
    }


def test_all_host_forms_reach_the_same_virtual_host(world: World) -> None:
    cfg = _routes(world)
    hits = [
        route(cfg, h, "/")
        for h in ("reviews:9080", "reviews.default:9080", "reviews.default.svc:9080", f"{REVIEWS}:9080")
    ]
    names = {hit.virtual_host if hit is not None else None for hit in hits}
    assert names == {f"{REVIEWS}:9080"}
    assert route(cfg, "reviews:8080", "/") is None  # no such port: 404


def test_weight_zero_destinations_are_dropped(world: World) -> None:
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {"v1": 100, "v3": 0})])
    hit = route(_routes(_with(world, vs)), "reviews:9080", "/")
    assert hit is not None and hit.clusters == {f"outbound|9080|v1|{REVIEWS}": 100}


def test_service_without_virtual_service_gets_istios_default_route(world: World) -> None:
    vs_less = World(MeshConfig(services=world.config.services, resources=[]))
    hit = route(_routes(vs_less), "reviews:9080", "/anything")
    assert hit is not None and hit.clusters == {f"outbound|9080||{REVIEWS}": 100}
    rp = hit.retry
    assert rp is not None
    assert rp.num_retries.value == 2
    assert rp.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert rp.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"
    assert hit.route_proto.route.timeout.seconds == 0  # type: ignore[union-attr]


def test_vs_retries_timeout_and_retriable_codes(world: World) -> None:
    vs = VirtualService(
        name="reviews",
        hosts=["reviews"],
        http=[
            HTTPRoute(
                route=[helpers.to("reviews", "v1")],
                timeout="2.5s",
                retries=helpers.retries(4, "250ms", "gateway-error,503,reset"),
            )
        ],
    )
    hit = route(_routes(_with(world, vs)), "reviews:9080", "/")
    action = hit.route_proto.route  # type: ignore[union-attr]
    assert (action.timeout.seconds, action.timeout.nanos) == (2, 500_000_000)
    assert action.retry_policy.num_retries.value == 4  # the route's own policy replaces the virtual host's
    assert action.retry_policy.retry_on == "gateway-error,reset,retriable-status-codes"
    assert list(action.retry_policy.retriable_status_codes) == [503]
    assert action.retry_policy.per_try_timeout.nanos == 250_000_000


def test_fault_percentages_use_istios_million_denominator(world: World) -> None:
    vs = VirtualService(
        name="ratings",
        hosts=["ratings"],
        http=[HTTPRoute(route=[helpers.to("ratings", "v1")], fault=helpers.abort(503, 12.5))],
    )
    hit = route(_routes(_with(world, vs)), "ratings:9080", "/")
    fault = fault_pb2.HTTPFault()
    hit.route_proto.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)  # type: ignore[union-attr]
    assert fault.abort.http_status == 503
    assert fault.abort.percentage.numerator == 125_000
    assert fault.abort.percentage.denominator == percent_pb2.FractionalPercent.MILLION


def test_gateway_routes_by_host_and_path(world: World) -> None:
    cfg = _routes(world, "gateway")
    assert cfg.name == "http.80"
    hit = route(cfg, "bookinfo.local", "/productpage")
    assert hit is not None and hit.clusters == {"outbound|9080||productpage.default.svc.cluster.local": 100}
    assert route(cfg, "bookinfo.local:8080", "/productpage") is not None  # host:* form
    assert route(cfg, "evil.example.com", "/productpage") is None
    assert route(cfg, "bookinfo.local", "/admin") is None


def test_subset_clusters_and_endpoints_follow_labels(world: World) -> None:
    snap = world.snapshot(world.sidecar("productpage-v1-0"))
    eds = snap.resources(rt.ENDPOINT).items

    def ips(name: str) -> set[str]:
        return {e.endpoint.address.socket_address.address for loc in eds[name].endpoints for e in loc.lb_endpoints}

    v1 = {p.ip for p in world.pods if p.service == "reviews" and p.version == "v1"}
    assert ips(f"outbound|9080|v1|{REVIEWS}") == v1 and len(v1) == 2
    assert len(ips(f"outbound|9080||{REVIEWS}")) == 4
    snap.consistent()


def test_destination_rule_policy_maps_field_by_field(world: World) -> None:
    dr = DestinationRule(
        name="reviews",
        host="reviews",
        traffic_policy=TrafficPolicy(
            connection_pool=ConnectionPoolSettings(
                tcp=TCPSettings(max_connections=7, connect_timeout="3s"),
                http=HTTPSettings(
                    http1_max_pending_requests=11, http2_max_requests=13, max_retries=2, max_requests_per_connection=1
                ),
            ),
            outlier_detection=OutlierDetection(
                consecutive_5xx_errors=4,
                interval="2s",
                base_ejection_time="45s",
                max_ejection_percent=60,
                min_health_percent=25,
            ),
        ),
        subsets=[
            Subset(
                name="v1", labels={"version": "v1"}, traffic_policy=TrafficPolicy(load_balancer=helpers_lb("RANDOM"))
            )
        ],
    )
    clusters = _clusters(_with(world, dr))
    top = clusters[f"outbound|9080||{REVIEWS}"]
    t = top.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value) == (
        7,
        11,
        13,
        2,
    )
    assert top.connect_timeout.seconds == 3
    assert top.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST  # Istio's default
    od = top.outlier_detection
    assert (
        od.consecutive_5xx.value,
        od.enforcing_consecutive_5xx.value,
        od.interval.seconds,
        od.base_ejection_time.seconds,
        od.max_ejection_percent.value,
        od.enforcing_success_rate.value,
    ) == (4, 100, 2, 45, 60, 0)
    assert top.common_lb_config.healthy_panic_threshold.value == 25
    sub = clusters[f"outbound|9080|v1|{REVIEWS}"]
    assert sub.lb_policy == cluster_pb2.Cluster.RANDOM  # subset policy overrides
    assert sub.outlier_detection.consecutive_5xx.value == 4  # and inherits the rest


def helpers_lb(simple: str):  # type: ignore[no-untyped-def]
    from mesh.api import LoadBalancerSettings

    return LoadBalancerSettings(simple=simple)


def test_default_circuit_breakers_are_unlimited(world: World) -> None:
    t = _clusters(world)[f"outbound|9080||{REVIEWS}"].circuit_breakers.thresholds[0]
    assert t.max_connections.value == t.max_requests.value == 4294967295


def test_auto_mtls_and_its_opt_outs(world: World) -> None:
    c = _clusters(world)[f"outbound|9080|v1|{REVIEWS}"]
    ctx = tls_pb2.UpstreamTlsContext()
    c.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == f"outbound_.9080_.v1_.{REVIEWS}"
    sans = [
        m.matcher.exact
        for m in ctx.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    ]
    assert sans == ["spiffe://cluster.local/ns/default/sa/reviews"]
    assert ctx.common_tls_context.tls_certificate_sds_secret_configs[0].name == "default"
    pa = PeerAuthentication(
        name="reviews-off",
        selector=WorkloadSelector(match_labels={"app": "reviews"}),
        mtls=PeerAuthenticationMTLS(mode="DISABLE"),
    )
    plain = _clusters(_with(world, pa))[f"outbound|9080|v1|{REVIEWS}"]
    assert not plain.HasField("transport_socket")


def _inbound(world: World, pod: str) -> listener_pb2.Listener:
    snap = world.snapshot(world.sidecar(pod))
    return next(lst for n, lst in snap.resources(rt.LISTENER).items.items() if n.endswith("_9080"))


def test_peer_authentication_modes_shape_inbound_filter_chains(world: World) -> None:
    strict = _inbound(world, "reviews-v1-0")
    assert [c.filter_chain_match.transport_protocol for c in strict.filter_chains] == ["tls"]
    pa = PeerAuthentication(
        name="p",
        selector=WorkloadSelector(match_labels={"app": "reviews"}),
        mtls=PeerAuthenticationMTLS(mode="PERMISSIVE"),
    )
    permissive = _inbound(_with(world, pa), "reviews-v1-0")
    assert [c.filter_chain_match.transport_protocol for c in permissive.filter_chains] == ["tls", "raw_buffer"]


def test_authorization_policy_becomes_rbac_with_spiffe_principals(world: World) -> None:
    lst = _inbound(world, "ratings-v1-0")
    m = hcm.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(m)
    names = [f.name for f in m.http_filters]
    assert names == ["envoy.filters.http.rbac.allow", "envoy.filters.http.router"]
    rbac = rbac_pb2.RBAC()
    m.http_filters[0].typed_config.Unpack(rbac)
    (policy,) = rbac.rules.policies.values()
    assert policy.principals[0].authenticated.principal_name.exact == "spiffe://cluster.local/ns/default/sa/reviews"
    # no policy on productpage: no RBAC filter at all
    m2 = hcm.HttpConnectionManager()
    _inbound(world, "productpage-v1-0").filter_chains[0].filters[0].typed_config.Unpack(m2)
    assert [f.name for f in m2.http_filters] == ["envoy.filters.http.router"]


def test_source_labels_match_only_for_matching_callers(world: World) -> None:
    from mesh.api import HTTPMatchRequest

    vs = VirtualService(
        name="ratings",
        hosts=["ratings"],
        http=[
            HTTPRoute(
                match=[HTTPMatchRequest(source_labels={"app": "reviews", "version": "v2"})],
                route=[helpers.to("ratings", "v1")],
                fault=helpers.abort(500),
            ),
            HTTPRoute(route=[helpers.to("ratings", "v1")]),
        ],
    )
    w = _with(world, vs)
    from_v2 = route(_routes(w, "reviews-v2-0"), "ratings:9080", "/")
    from_v3 = route(_routes(w, "reviews-v3-0"), "ratings:9080", "/")
    assert from_v2 is not None and "envoy.filters.http.fault" in from_v2.route_proto.typed_per_filter_config  # type: ignore[union-attr]
    assert from_v3 is not None and "envoy.filters.http.fault" not in from_v3.route_proto.typed_per_filter_config  # type: ignore[union-attr]


def test_translation_is_deterministic(world: World) -> None:
    a = world.snapshot(world.sidecar("reviews-v2-0"))
    b = World(world.config).snapshot(World(world.config).sidecar("reviews-v2-0"))
    for t in (rt.CLUSTER, rt.ENDPOINT, rt.LISTENER, rt.ROUTE):
        assert a.version(t) == b.version(t)


def test_attempts_zero_is_an_explicit_no_retry_policy(world: World) -> None:
    vs = VirtualService(
        name="reviews",
        hosts=["reviews"],
        http=[HTTPRoute(route=[helpers.to("reviews", "v1")], retries=helpers.retries(0))],
    )
    hit = route(_routes(_with(world, vs)), "reviews:9080", "/")
    assert hit is not None and hit.retry is not None and hit.retry.num_retries.value == 0


def test_when_conditions_on_the_caller_and_the_request(world: World) -> None:
    from mesh.api import AuthorizationPolicy, Condition, Rule

    ap = AuthorizationPolicy(
        name="echo-deny",
        selector=WorkloadSelector(match_labels={"app": "echo"}),
        action="DENY",
        rules=[
            Rule(
                when=[
                    Condition(key="source.namespace", values=["legacy"]),
                    Condition(key="request.headers[x-debug]", not_values=["off"]),
                ]
            )
        ],
    )
    lst = _inbound(_with(world, ap), "echo-v1-0")
    m = hcm.HttpConnectionManager()
    lst.filter_chains[0].filters[0].typed_config.Unpack(m)
    assert m.http_filters[0].name == "envoy.filters.http.rbac.deny"
    rbac = rbac_pb2.RBAC()
    m.http_filters[0].typed_config.Unpack(rbac)
    (policy,) = rbac.rules.policies.values()
    ids = policy.principals[0].and_ids.ids
    assert ids[1].authenticated.principal_name.safe_regex.regex == ".*/ns/legacy/.*"
    assert policy.permissions[0].not_rule.header.name == "x-debug"
