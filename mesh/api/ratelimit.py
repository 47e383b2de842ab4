"""Local rate limiting in the mesh: a token bucket on each selected workload's inbound side (or the gateway), or on
chosen routes of the gateway, optionally one bucket per request-header value.

Istio has no resource for it: its users write an `EnvoyFilter` that inserts Envoy's `local_ratelimit` filter (and,
per route, an `HTTP_ROUTE` patch merging the filter's per-route config into `typed_per_filter_config`). Those patches
are untyped Envoy config matched by listener context and route name, easy to get silently wrong, so meshops has its
own typed kind (`meshops.dev/v1alpha1`) that compiles to exactly those EnvoyFilters for Kubernetes and to the same
filter and per-route config locally.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from mesh.api._base import IstioModel, Resource, parse_duration
from mesh.api.edge import MESHOPS
from mesh.api.networking import HTTPMatchRequest, HTTPRoute, VirtualService, WorkloadSelector

LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
# a second instance of the same filter, for route-scoped limits: disabled on the listener, enabled by each limited
# route's `typed_per_filter_config` under this name. Its own name keeps a route's bucket apart from a workload-wide
# limit on the same proxy (Envoy looks per-route config up by the filter's name): both limits hold on that route.
ROUTE_RATELIMIT_FILTER = "meshops.route_local_ratelimit"
LOCAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
STAT_PREFIX = "http_local_rate_limiter"  # stats: <prefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
ROUTE_STAT_PREFIX = (
    "route_local_rate_limiter"  # route-scoped limits: <prefix>_<namespace>_<name>.http_local_rate_limit.*
)
DEFAULT_MAX_DYNAMIC_BUCKETS = 1000
RATELIMITED_HEADER = "x-envoy-ratelimited"


class TokenBucket(IstioModel):
    """At most `max_tokens` requests in a burst; `tokens_per_fill` come back every `fill_interval` (Envoy's bucket)."""

    max_tokens: int = Field(ge=1)
    tokens_per_fill: int | None = Field(default=None, ge=1)  # max_tokens when unset: the whole bucket refills
    fill_interval: str = "1s"

    @field_validator("fill_interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        if parse_duration(v) < 0.05:
            raise ValueError(f"fill_interval {v!r} must be at least 50ms (Envoy's minimum)")
        return v


class RouteSelector(IstioModel):
    """Gateway routes a limit applies to, by name or by what they match:

    - `virtual_service` (a name in the limit's namespace, or `namespace/name`) and `route` (an http rule's `name`;
      every rule of that VirtualService when unset), or
    - `host` (one of a VirtualService's hosts) and `path`: the rules with a match whose uri is exactly `path`
      (written as `exact` or `prefix`); every rule for the host when `path` is unset.
    """

    virtual_service: str | None = Field(default=None, min_length=1)
    route: str | None = Field(default=None, min_length=1)
    host: str | None = Field(default=None, min_length=1)
    path: str | None = Field(default=None, pattern=r"^/")

    @model_validator(mode="after")
    def _one_form(self) -> RouteSelector:
        by_name, by_match = self.virtual_service is not None, self.host is not None
        if by_name == by_match:
            raise ValueError("set either virtual_service (and optionally route) or host (and optionally path)")
        if by_name and self.path is not None:
            raise ValueError("path selects routes by match: use it with host, not with virtual_service")
        if by_match and self.route is not None:
            raise ValueError("route names an http rule of a VirtualService: use it with virtual_service, not host")
        return self

    def selects(self, namespace: str, vs: VirtualService, rule: HTTPRoute, match: HTTPMatchRequest | None) -> bool:
        """Whether the Envoy route made of `vs`'s `rule` and its `match` clause is one of these (`namespace`: the
        limit's, where a bare VirtualService name is looked up)."""
        if self.virtual_service is not None:
            ns, _, name = self.virtual_service.rpartition("/")
            if (vs.namespace, vs.name) != (ns or namespace, name):
                return False
            return self.route is None or rule.name == self.route
        if self.host not in vs.hosts:
            return False
        if self.path is None:
            return True
        uri = match.uri if match is not None else None
        return uri is not None and self.path in (uri.exact, uri.prefix)

    def describe(self) -> str:
        if self.virtual_service is not None:
            return f"VirtualService {self.virtual_service}" + (f" route {self.route!r}" if self.route else "")
        return f"host {self.host}" + (f" path {self.path}" if self.path else "")


class RateLimitDescriptor(IstioModel):
    """A bucket keyed by a request header (`:path`, `:authority`, or any header such as `x-user`): with `value`, the
    requests carrying exactly that value share `token_bucket`; without, each distinct value gets a bucket of its own
    (Envoy's dynamic descriptors; `RateLimit.max_dynamic_buckets` values at once, least recently used evicted).
    Requests without the header use the limit's own `token_bucket`."""

    header: str = Field(pattern=r"^:?[a-z0-9][a-z0-9_.-]*$")  # lowercase, as HTTP/2 and Envoy see header names
    value: str | None = Field(default=None, min_length=1)
    token_bucket: TokenBucket


class RateLimit(Resource):
    """Requests beyond the bucket are answered 429 with `x-envoy-ratelimited: true` by the workload's own proxy.

    `workload_selector` picks the workloads in this object's namespace (all of them when unset; in the root namespace
    `istio-system`: every workload in the mesh, the ingress gateway included). Each proxy has its own bucket per
    listener (per inbound port), as Envoy's local rate limit works: N replicas admit N times the rate.

    With `routes` the limit applies only to those gateway routes, each route with its own bucket (per gateway
    replica), in addition to any workload-wide limit. With `descriptors` requests are bucketed by header value.
    """

    api_version: ClassVar[str] = MESHOPS
    kind: ClassVar[str] = "RateLimit"

    workload_selector: WorkloadSelector | None = None
    token_bucket: TokenBucket
    routes: list[RouteSelector] = []
    descriptors: list[RateLimitDescriptor] = []
    max_dynamic_buckets: int = Field(default=DEFAULT_MAX_DYNAMIC_BUCKETS, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _refill_fits(self) -> RateLimit:
        for where, b in [("token_bucket", self.token_bucket)] + [
            (f"descriptors[{i}].token_bucket", d.token_bucket) for i, d in enumerate(self.descriptors)
        ]:
            if b.tokens_per_fill is not None and b.tokens_per_fill > b.max_tokens:
                raise ValueError(f"{where}: tokens_per_fill {b.tokens_per_fill} exceeds max_tokens {b.max_tokens}")
        return self

    @model_validator(mode="after")
    def _descriptors_distinct(self) -> RateLimit:
        keys = [(d.header, d.value) for d in self.descriptors]
        dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        if dup:
            raise ValueError(f"two descriptors for the same header and value: {dup}")
        return self

    @property
    def route_scoped(self) -> bool:
        return bool(self.routes)

    @property
    def stat_prefix(self) -> str:
        """Workload-wide limits share Envoy's usual prefix; each route-scoped limit counts under its own name."""
        if not self.route_scoped:
            return STAT_PREFIX
        return f"{ROUTE_STAT_PREFIX}_{self.namespace}_{self.name}".replace(".", "_").replace("-", "_")

    def envoy_config(self) -> dict[str, Any]:
        """The filter's Envoy config (JSON, proto field names): one source for the local push (parsed into the
        proto) and the Kubernetes EnvoyFilter (carried as the patch value), so both targets run the same."""
        always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        out: dict[str, Any] = {
            "stat_prefix": self.stat_prefix,
            "token_bucket": _bucket(self.token_bucket),
            "filter_enabled": always,
            "filter_enforced": always,
            "response_headers_to_add": [
                {
                    "header": {"key": RATELIMITED_HEADER, "value": "true"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
        if self.descriptors:
            out.update(self._descriptor_config())
        return out

    def _descriptor_config(self) -> dict[str, Any]:
        """One descriptor action per header (generated from the request), and the buckets keyed by its values:
        exact values before the header's catch-all (value omitted: a bucket per distinct value). A request matching
        a descriptor uses only that bucket, not the limit's own (`always_consume_default_token_bucket: false`)."""
        headers = list(dict.fromkeys(d.header for d in self.descriptors))
        ordered = sorted(self.descriptors, key=lambda d: (headers.index(d.header), d.value is None))
        out: dict[str, Any] = {
            "rate_limits": [
                {"actions": [{"request_headers": {"header_name": h, "descriptor_key": h}}]} for h in headers
            ],
            "descriptors": [
                {
                    "entries": [{"key": d.header, **({"value": d.value} if d.value is not None else {})}],
                    "token_bucket": _bucket(d.token_bucket),
                }
                for d in ordered
            ],
            "always_consume_default_token_bucket": False,
        }
        if any(d.value is None for d in self.descriptors):
            out["max_dynamic_descriptors"] = self.max_dynamic_buckets
        return out


def gateway_rules(
    virtual_services: list[VirtualService],
) -> list[tuple[VirtualService, int, HTTPRoute, HTTPMatchRequest | None]]:
    """Every (VirtualService, rule index, rule, match clause) a gateway serves: what route selectors choose from."""
    out: list[tuple[VirtualService, int, HTTPRoute, HTTPMatchRequest | None]] = []
    for vs in virtual_services:
        if not any(g != "mesh" for g in vs.gateways):
            continue
        for i, rule in enumerate(vs.http):
            matches: list[HTTPMatchRequest | None] = list(rule.match) or [None]
            out += [(vs, i, rule, m) for m in matches]
    return out


def route_filter_config() -> dict[str, Any]:
    """The route-scoped filter as the listener carries it: no bucket and not enabled (Envoy's default: 0% of
    requests), so only the routes whose `typed_per_filter_config` enables it are limited."""
    return {"stat_prefix": ROUTE_STAT_PREFIX}


def _bucket(b: TokenBucket) -> dict[str, Any]:
    return {
        "max_tokens": b.max_tokens,
        "tokens_per_fill": b.tokens_per_fill or b.max_tokens,
        "fill_interval": f"{parse_duration(b.fill_interval):g}s",
    }
