"""RateLimit -> Envoy's `envoy.filters.http.local_ratelimit` in the HTTP filter chain of the selected proxies
(inbound listeners of sidecars, the gateway's listeners), before the router; route-scoped limits -> a second,
listener-disabled instance of the filter on the gateway, enabled by each limited route's `typed_per_filter_config`.
Pure: config and proxy in, filters and per-route configs out."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from mesh.api.config import MeshConfig
from mesh.api.networking import HTTPMatchRequest, HTTPRoute, VirtualService
from mesh.api.ratelimit import LOCAL_RATELIMIT_FILTER, ROUTE_RATELIMIT_FILTER, RateLimit, route_filter_config
from mesh.controlplane.translate.protos import packed
from mesh.istio.constants import ROOT_NAMESPACE
from mesh.runtime import Proxy


def selects(limit: RateLimit, proxy: Proxy) -> bool:
    """Istio's EnvoyFilter scoping: the object's namespace (the root namespace: every namespace), then labels."""
    if limit.namespace not in (ROOT_NAMESPACE, proxy.namespace):
        return False
    labels = limit.workload_selector.match_labels if limit.workload_selector else {}
    return all(proxy.labels.get(k) == v for k, v in labels.items())


def _ordered(limits: list[RateLimit]) -> list[RateLimit]:
    """Istio's EnvoyFilter order: root namespace first, then by name; the last one applied wins."""
    return sorted(limits, key=lambda r: (r.namespace != ROOT_NAMESPACE, r.name))


Limits = MeshConfig | Sequence[RateLimit]  # the whole config, or its RateLimits already picked out (once per push)


def _limits(config: Limits) -> Sequence[RateLimit]:
    return config.of_kind(RateLimit) if isinstance(config, MeshConfig) else config


def applicable(config: Limits, proxy: Proxy) -> RateLimit | None:
    """The one workload-wide limit for this proxy: a namespace-local one wins over the root namespace's, then by
    name (as Istio orders EnvoyFilters: root namespace first, so the workload's own namespace is applied last)."""
    matching = _ordered([r for r in _limits(config) if not r.route_scoped and selects(r, proxy)])
    return matching[-1] if matching else None


def route_limits(config: Limits, proxy: Proxy) -> list[RateLimit]:
    """Route-scoped limits selecting this proxy. Only gateways serve VirtualService routes to clients they do not
    know (a sidecar's routes are its own app's outbound calls): route-scoped limits apply to gateways."""
    if proxy.kind != "router":
        return []
    return _ordered([r for r in _limits(config) if r.route_scoped and selects(r, proxy)])


def local_rate_limit(limit: RateLimit) -> lrl.LocalRateLimit:
    return json_format.ParseDict(limit.envoy_config(), lrl.LocalRateLimit())


def rate_limit_filters(config: Limits, proxy: Proxy) -> list[hcm.HttpFilter]:
    """The filters for this proxy's HTTP chains (before the router): the workload-wide limit, then the route-scoped
    instance when a route of this proxy is limited; none when nothing limits it."""
    out = []
    limit = applicable(config, proxy)
    if limit is not None:
        out.append(hcm.HttpFilter(name=LOCAL_RATELIMIT_FILTER, typed_config=packed(local_rate_limit(limit))))
    if route_limits(config, proxy):
        disabled = json_format.ParseDict(route_filter_config(), lrl.LocalRateLimit())
        out.append(hcm.HttpFilter(name=ROUTE_RATELIMIT_FILTER, typed_config=packed(disabled)))
    return out


def route_rate_limit(
    config: Limits, proxy: Proxy, vs: VirtualService, rule: HTTPRoute, match: HTTPMatchRequest | None
) -> lrl.LocalRateLimit | None:
    """The per-route config of the route made of `rule` and `match` on this proxy (the last selecting limit in
    EnvoyFilter order), or None when no route-scoped limit selects it."""
    chosen = [
        r for r in route_limits(config, proxy) if any(sel.selects(r.namespace, vs, rule, match) for sel in r.routes)
    ]
    return local_rate_limit(chosen[-1]) if chosen else None
