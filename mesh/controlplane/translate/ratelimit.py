"""RateLimit -> Envoy's `envoy.filters.http.local_ratelimit` in the HTTP filter chain of the selected proxies
(inbound listeners of sidecars, the gateway's listeners), before the router. Pure: config and proxy in, filters out."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import json_format

from mesh.api.config import MeshConfig
from mesh.api.ratelimit import LOCAL_RATELIMIT_FILTER, RateLimit
from mesh.controlplane.translate.protos import packed
from mesh.istio.constants import ROOT_NAMESPACE
from mesh.runtime import Proxy


def selects(limit: RateLimit, proxy: Proxy) -> bool:
    """Istio's EnvoyFilter scoping: the object's namespace (the root namespace: every namespace), then labels."""
    if limit.namespace not in (ROOT_NAMESPACE, proxy.namespace):
        return False
    labels = limit.workload_selector.match_labels if limit.workload_selector else {}
    return all(proxy.labels.get(k) == v for k, v in labels.items())


def applicable(config: MeshConfig | Sequence[RateLimit], proxy: Proxy) -> RateLimit | None:
    """The one limit for this proxy: a namespace-local one wins over the root namespace's, then by name (as
    Istio orders EnvoyFilters: root namespace first, so the workload's own namespace is applied last and wins).
    `config`: the whole config, or its RateLimits already picked out (the push context's, once per push)."""
    limits = config.of_kind(RateLimit) if isinstance(config, MeshConfig) else config
    matching = [r for r in limits if selects(r, proxy)]
    matching.sort(key=lambda r: (r.namespace != ROOT_NAMESPACE, r.name))
    return matching[-1] if matching else None


def local_rate_limit(limit: RateLimit) -> lrl.LocalRateLimit:
    return json_format.ParseDict(limit.envoy_config(), lrl.LocalRateLimit())


def rate_limit_filters(config: MeshConfig | Sequence[RateLimit], proxy: Proxy) -> list[hcm.HttpFilter]:
    """The filter for this proxy's HTTP chains (before the router), or none."""
    limit = applicable(config, proxy)
    if limit is None:
        return []
    return [hcm.HttpFilter(name=LOCAL_RATELIMIT_FILTER, typed_config=packed(local_rate_limit(limit)))]
