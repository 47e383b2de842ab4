"""Local rate limiting in the mesh: a token bucket on each selected workload's inbound side (or the gateway).

Istio has no resource for it: its users write an `EnvoyFilter` that inserts Envoy's `local_ratelimit` filter. That
patch is untyped Envoy config matched by listener context, easy to get silently wrong, so meshops has its own typed
kind (`meshops.dev/v1alpha1`) that compiles to exactly that EnvoyFilter for Kubernetes and to the same filter locally.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from mesh.api._base import IstioModel, Resource, parse_duration
from mesh.api.edge import MESHOPS
from mesh.api.networking import WorkloadSelector

LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
LOCAL_RATELIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
STAT_PREFIX = "http_local_rate_limiter"  # stats: <prefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
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


class RateLimit(Resource):
    """Requests beyond the bucket are answered 429 with `x-envoy-ratelimited: true` by the workload's own proxy.

    `workload_selector` picks the workloads in this object's namespace (all of them when unset; in the root namespace
    `istio-system`: every workload in the mesh, the ingress gateway included). Each proxy has its own bucket per
    listener (per inbound port), as Envoy's local rate limit works: N replicas admit N times the rate.
    """

    api_version: ClassVar[str] = MESHOPS
    kind: ClassVar[str] = "RateLimit"

    workload_selector: WorkloadSelector | None = None
    token_bucket: TokenBucket

    @model_validator(mode="after")
    def _refill_fits(self) -> RateLimit:
        b = self.token_bucket
        if b.tokens_per_fill is not None and b.tokens_per_fill > b.max_tokens:
            raise ValueError(f"tokens_per_fill {b.tokens_per_fill} exceeds max_tokens {b.max_tokens}")
        return self

    def envoy_config(self) -> dict[str, Any]:
        """The filter's Envoy config (JSON, proto field names): one source for the local push (parsed into the
        proto) and the Kubernetes EnvoyFilter (carried as the patch value), so both targets run the same."""
        b = self.token_bucket
        always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
        return {
            "stat_prefix": STAT_PREFIX,
            "token_bucket": {
                "max_tokens": b.max_tokens,
                "tokens_per_fill": b.tokens_per_fill or b.max_tokens,
                "fill_interval": f"{parse_duration(b.fill_interval):g}s",
            },
            "filter_enabled": always,
            "filter_enforced": always,
            "response_headers_to_add": [
                {
                    "header": {"key": RATELIMITED_HEADER, "value": "true"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
