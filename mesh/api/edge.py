"""The edge tier: what stands in front of the ingress gateway replicas (HAProxy, as the product's spec names it).

Not an Istio resource: Istio stops at the gateway. `Edge` is meshops' own kind (`meshops.dev/v1alpha1`) with the
same conventions as the Istio models: unknown fields are errors, durations are Go durations, wire names camelCase.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import IstioModel, Resource, parse_duration

MESHOPS = "meshops.dev/v1alpha1"


class EdgeTLS(IstioModel):
    """TLS termination at the edge. `credential` names a gateway credential (a directory with tls.crt and tls.key,
    as `credentialName` does for the gateway); `alpn` lists the protocols offered, first preferred."""

    credential: str = Field(min_length=1)
    alpn: list[Literal["h2", "http/1.1"]] = ["h2", "http/1.1"]
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    @field_validator("alpn")
    @classmethod
    def _alpn_not_empty(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("alpn lists each protocol once, at least one of 'h2' and 'http/1.1'")
        return v


class EdgeListener(IstioModel):
    """One address the edge accepts clients on. With `tls` the edge terminates TLS (HTTPS, HTTP/2 via ALPN)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    port: int = Field(ge=1, le=65535)
    address: str = "127.0.0.1"
    tls: EdgeTLS | None = None


class Rate(IstioModel):
    """At most `requests` per `period` (a sliding window, as HAProxy's stick-table rate counters measure it)."""

    requests: int = Field(ge=1)
    period: str = "1s"

    @field_validator("period")
    @classmethod
    def _period_bounds(cls, v: str) -> str:
        seconds = parse_duration(v)
        if seconds < 0.001 or seconds > 24 * 3600:
            raise ValueError(f"period {v!r} must be between 1ms and 24h")
        return v


class RateLimits(IstioModel):
    """Requests over a limit are answered `status` (429) by the edge; the gateway never sees them."""

    per_client: Rate | None = None  # keyed by the client's address
    per_host: Rate | None = None  # keyed by the Host (:authority) header
    status: int = Field(default=429, ge=400, le=599)
    table_size: int = Field(default=100_000, ge=1)


class HealthCheck(IstioModel):
    """Active health checks: HAProxy asks every replica `GET path` every `interval`; `fall` failures take a replica
    out, `rise` successes bring it back. `port` defaults to the replica's traffic port."""

    path: str = Field(default="/healthz/ready", pattern=r"^/")
    port: int | None = Field(default=None, ge=1, le=65535)
    host: str = Field(default="edge-health-check", pattern=r"^[A-Za-z0-9.-]+$")
    interval: str = "500ms"
    rise: int = Field(default=2, ge=1)
    fall: int = Field(default=2, ge=1)

    @field_validator("interval")
    @classmethod
    def _durations(cls, v: str) -> str:
        parse_duration(v)
        return v


class EdgeTimeouts(IstioModel):
    connect: str = "1s"
    client: str = "30s"
    server: str = "30s"
    queue: str = "5s"
    http_request: str = "10s"

    @field_validator("connect", "client", "server", "queue", "http_request")
    @classmethod
    def _durations(cls, v: str) -> str:
        parse_duration(v)
        return v


class Edge(Resource):
    """The edge tier in front of the ingress gateway replicas.

    Failed attempts (refused or reset connections, empty responses) are retried `retries` times, on another replica
    (redispatch), so losing a replica under load fails no request.
    """

    api_version: ClassVar[str] = MESHOPS
    kind: ClassVar[str] = "Edge"

    listeners: list[EdgeListener] = Field(min_length=1)
    forward: Literal["x-forwarded-for", "proxy-protocol"] = "x-forwarded-for"
    rate_limits: RateLimits | None = None
    health_check: HealthCheck = HealthCheck()
    timeouts: EdgeTimeouts = EdgeTimeouts()
    retries: int = Field(default=3, ge=0, le=10)
    max_connections: int = Field(default=4096, ge=1, le=100_000)
    serve_acme_challenges: bool = True  # plain-HTTP listeners answer ACME HTTP-01 challenges (see mesh.edge.acme)

    @model_validator(mode="after")
    def _unique_listeners(self) -> Edge:
        names = [lst.name for lst in self.listeners]
        if len(set(names)) != len(names):
            raise ValueError(f"listener names must be unique, got {names}")
        binds = [(lst.address, lst.port) for lst in self.listeners]
        if len(set(binds)) != len(binds):
            raise ValueError(f"two listeners bind the same address and port: {binds}")
        return self
