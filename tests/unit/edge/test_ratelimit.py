"""RateLimit -> Envoy's local_ratelimit locally and an Istio EnvoyFilter for Kubernetes, from one translation."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from pydantic import ValidationError

from mesh.api import RateLimit, RateLimitDescriptor, RouteSelector, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.envoyfilter import EnvoyFilter
from mesh.api.networking import VirtualService, WorkloadSelector
from mesh.api.ratelimit import LOCAL_RATELIMIT_FILTER as FILTER
from mesh.api.ratelimit import LOCAL_RATELIMIT_TYPE
from mesh.api.ratelimit import ROUTE_RATELIMIT_FILTER as ROUTE_FILTER
from mesh.compile import build_policies
from mesh.compile.ratelimit import envoy_filter
from mesh.compile.render import render_istio
from mesh.controlplane.translate import PushContext
from mesh.controlplane.translate.ratelimit import applicable, local_rate_limit, rate_limit_filters
from mesh.controlplane.translate.routes import build_routes
from mesh.errors import PolicyError
from mesh.runtime import Proxy, gateway_proxy

BUCKET = TokenBucket(max_tokens=10, tokens_per_fill=5, fill_interval="2s")


def _proxy(namespace: str, **labels: str) -> Proxy:
    return Proxy("sidecar", "10.0.0.1", "p", namespace, labels, "sa", None, {})


def test_scoping_follows_envoyfilter_namespace_and_labels() -> None:
    mine = RateLimit(
        name="a",
        namespace="shop",
        workload_selector=WorkloadSelector(match_labels={"app": "cart"}),
        token_bucket=BUCKET,
    )
    everyone = RateLimit(name="all", namespace="istio-system", token_bucket=BUCKET)
    config = MeshConfig(resources=[mine, everyone])
    assert applicable(config, _proxy("shop", app="cart")) == mine  # the namespace's own wins over the root's
    assert applicable(config, _proxy("shop", app="web")) == everyone
    assert applicable(MeshConfig(resources=[mine]), _proxy("other", app="cart")) is None
    assert rate_limit_filters(MeshConfig(), _proxy("shop")) == []
    (f,) = rate_limit_filters(config, _proxy("shop", app="cart"))
    assert f.name == FILTER


def test_renders_to_the_envoyfilter_istio_users_write() -> None:
    limit = RateLimit(
        name="cart",
        namespace="shop",
        workload_selector=WorkloadSelector(match_labels={"app": "cart"}),
        token_bucket=BUCKET,
    )
    ef = envoy_filter(limit)
    again = EnvoyFilter.model_validate(ef.model_dump(by_alias=True, exclude_none=True))  # the typed model accepts it
    assert again.config_patches == ef.config_patches and again.workload_selector == ef.workload_selector
    assert [p.match.context for p in ef.config_patches if p.match] == ["SIDECAR_INBOUND", "GATEWAY"]
    patch = ef.config_patches[0]
    assert patch.apply_to == "HTTP_FILTER" and patch.patch is not None and patch.patch.operation == "INSERT_BEFORE"
    value = patch.patch.value or {}
    bucket = value["typed_config"]["token_bucket"]
    assert (bucket["max_tokens"], bucket["tokens_per_fill"], bucket["fill_interval"]) == (10, 5, "2s")
    manifests = render_istio(MeshConfig(resources=[limit]))
    assert [(m["kind"], m["metadata"]["name"]) for m in manifests] == [("EnvoyFilter", "ratelimit-cart")]
    # EnvoyFilter's selector is networking.v1alpha3.WorkloadSelector: `labels` (a `matchLabels` key is no field of
    # Istio's CRD, and a selector lost that way would patch every workload of the namespace)
    assert manifests[0]["spec"]["workloadSelector"] == {"labels": {"app": "cart"}}


def test_refill_larger_than_the_bucket_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds max_tokens"):
        RateLimit(name="x", token_bucket=TokenBucket(max_tokens=1, tokens_per_fill=2))


# --- route-scoped limits and descriptors ------------------------------------------------------------------------

ROUTE_BUCKET = TokenBucket(max_tokens=5, fill_interval="1m")
GATEWAY = WorkloadSelector(match_labels={"istio": "ingressgateway"})


def _named_ingress(config: MeshConfig) -> MeshConfig:
    """The e2e policies with the ingress VirtualService's rules named `pages` and `static`, as Istio users name
    routes they patch."""
    out = []
    for r in config.resources:
        if isinstance(r, VirtualService) and r.name == "bookinfo":
            http = [rule.model_copy(update={"name": n}) for rule, n in zip(r.http, ("pages", "static"), strict=True)]
            r = r.model_copy(update={"http": http})
        out.append(r)
    return MeshConfig(services=list(config.services), resources=out)


def _gateway_routes(config: MeshConfig) -> dict[str, rc.Route]:
    push = PushContext(config, [])
    gw = gateway_proxy("127.99.0.1", {80: ("127.0.0.1", 8080)})
    return {
        r.name or r.match.prefix: r for table in build_routes(push, gw) for vh in table.virtual_hosts for r in vh.routes
    }


def _route_limit(**kw: object) -> RateLimit:
    return RateLimit(name="pages", namespace="istio-system", workload_selector=GATEWAY, token_bucket=ROUTE_BUCKET, **kw)


@pytest.mark.parametrize(
    "selector",
    [
        RouteSelector(host="bookinfo.local", path="/productpage"),
        RouteSelector(virtual_service="default/bookinfo", route="pages"),
    ],
    ids=["host+path", "virtual_service+route"],
)
def test_a_route_scoped_limit_configures_only_its_route_on_the_gateway(selector: RouteSelector) -> None:
    limit = _route_limit(routes=[selector])
    config = _named_ingress(build_policies("e2e"))
    routes = _gateway_routes(MeshConfig(services=list(config.services), resources=[*config.resources, limit]))
    assert ROUTE_FILTER in routes["pages"].typed_per_filter_config
    assert ROUTE_FILTER not in routes["static"].typed_per_filter_config
    per_route = lrl.LocalRateLimit()
    routes["pages"].typed_per_filter_config[ROUTE_FILTER].Unpack(per_route)
    assert per_route.token_bucket.max_tokens == 5 and per_route.stat_prefix == limit.stat_prefix
    assert per_route.filter_enabled.default_value.numerator == 100


def test_the_route_filter_is_on_the_gateway_listener_disabled_and_never_on_sidecars() -> None:
    limit = _route_limit(routes=[RouteSelector(host="bookinfo.local")])
    workload = RateLimit(name="all", namespace="istio-system", token_bucket=BUCKET)  # every proxy, every request
    config = MeshConfig(resources=[limit, workload])
    gw = gateway_proxy("127.99.0.1", {80: ("127.0.0.1", 8080)})
    assert applicable(config, gw) == workload  # a route-scoped limit is never the workload-wide one
    names = [f.name for f in rate_limit_filters(config, gw)]
    assert names == [FILTER, ROUTE_FILTER]  # both hold: the route's bucket does not replace the workload's
    disabled = lrl.LocalRateLimit()
    rate_limit_filters(config, gw)[1].typed_config.Unpack(disabled)
    assert not disabled.HasField("token_bucket") and not disabled.HasField("filter_enabled")
    sidecar = _proxy("default", app="productpage")
    assert [f.name for f in rate_limit_filters(config, sidecar)] == [FILTER]


def test_descriptors_bucket_by_header_value_exact_values_first() -> None:
    limit = _route_limit(
        routes=[RouteSelector(host="bookinfo.local")],
        descriptors=[
            RateLimitDescriptor(header="x-user", token_bucket=TokenBucket(max_tokens=3)),
            RateLimitDescriptor(header="x-user", value="vip", token_bucket=TokenBucket(max_tokens=50)),
            RateLimitDescriptor(header=":path", value="/login", token_bucket=TokenBucket(max_tokens=1)),
        ],
        max_dynamic_buckets=64,
    )
    cfg = local_rate_limit(limit)
    assert [a.actions[0].request_headers.header_name for a in cfg.rate_limits] == ["x-user", ":path"]
    assert [(d.entries[0].key, d.entries[0].value, d.token_bucket.max_tokens) for d in cfg.descriptors] == [
        ("x-user", "vip", 50),
        ("x-user", "", 3),  # no value: a bucket per distinct value
        (":path", "/login", 1),
    ]
    assert cfg.max_dynamic_descriptors.value == 64
    assert cfg.always_consume_default_token_bucket.value is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "a", "route": "x"}, "use it with virtual_service"),
        ({"virtual_service": "a", "path": "/x"}, "use it with host"),
        ({}, "set either virtual_service"),
        ({"host": "a", "virtual_service": "b"}, "set either virtual_service"),
    ],
)
def test_a_route_selector_has_one_form(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RouteSelector(**kwargs)


def test_duplicate_descriptors_and_oversized_refills_are_refused() -> None:
    d = RateLimitDescriptor(header="x-user", value="a", token_bucket=TokenBucket(max_tokens=1))
    with pytest.raises(ValidationError, match="same header and value"):
        RateLimit(name="x", token_bucket=BUCKET, descriptors=[d, d])
    big = RateLimitDescriptor(header="x-user", token_bucket=TokenBucket(max_tokens=1, tokens_per_fill=2))
    with pytest.raises(ValidationError, match=r"descriptors\[0\]\.token_bucket: tokens_per_fill"):
        RateLimit(name="x", token_bucket=BUCKET, descriptors=[big])


def test_route_scoped_limit_renders_to_http_route_patches_on_istios_route_names() -> None:
    limit = _route_limit(
        routes=[RouteSelector(host="bookinfo.local", path="/productpage")],
        descriptors=[RateLimitDescriptor(header="x-user", token_bucket=TokenBucket(max_tokens=3))],
    )
    base = _named_ingress(build_policies("e2e"))
    config = MeshConfig(services=list(base.services), resources=[*base.resources, limit])
    manifests = {(m["kind"], m["metadata"]["name"]): m for m in render_istio(config)}
    mine = manifests[("EnvoyFilter", "ratelimit-pages")]
    typed = EnvoyFilter.model_validate({**mine["spec"], "name": "x"})  # the typed model (Envoy's protos) accepts it
    (patch,) = typed.config_patches
    assert patch.apply_to == "HTTP_ROUTE" and patch.match is not None and patch.match.context == "GATEWAY"
    assert patch.match.route_configuration is not None and patch.match.route_configuration.vhost is not None
    assert patch.match.route_configuration.vhost.route is not None
    assert patch.match.route_configuration.vhost.route.name == "pages"
    assert patch.patch is not None and patch.patch.operation == "MERGE"
    per_route = (patch.patch.value or {})["typed_per_filter_config"][ROUTE_FILTER]
    assert per_route == {"@type": LOCAL_RATELIMIT_TYPE, **limit.envoy_config()}  # what the local mesh pushes
    shared = manifests[("EnvoyFilter", "meshops-route-ratelimit")]
    assert shared["metadata"]["namespace"] == "istio-system" and "workloadSelector" not in shared["spec"]
    (insert,) = EnvoyFilter.model_validate({**shared["spec"], "name": "y"}).config_patches
    assert insert.apply_to == "HTTP_FILTER" and insert.patch is not None and insert.patch.operation == "INSERT_BEFORE"
    assert (insert.patch.value or {})["name"] == ROUTE_FILTER


def test_a_route_kubernetes_cannot_find_is_refused_with_the_fix() -> None:
    unnamed = build_policies("e2e")  # the ingress rules have no names: an EnvoyFilter cannot match them
    limit = _route_limit(routes=[RouteSelector(host="bookinfo.local", path="/productpage")])
    with pytest.raises(PolicyError, match=r"http\[0\] of VirtualService default/bookinfo, which has no name"):
        render_istio(MeshConfig(services=list(unnamed.services), resources=[*unnamed.resources, limit]))
    nothing = _route_limit(routes=[RouteSelector(host="nowhere.local")])
    with pytest.raises(PolicyError, match="selects no gateway route"):
        render_istio(MeshConfig(resources=[nothing]))
