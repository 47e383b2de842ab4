"""networking.istio.io/v1: Gateway, VirtualService, DestinationRule.

Field names are Istio's in snake_case; the wire form (`to_manifest`) uses Istio's camelCase.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import IstioModel, Resource, check_duration

NETWORKING = "networking.istio.io/v1"

Protocol = Literal["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]


# --- shared pieces -----------------------------------------------------------------------------


class StringMatch(IstioModel):
    """Exactly one of exact, prefix or regex (RE2 syntax)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"set exactly one of exact, prefix or regex (got {', '.join(set_) or 'none'})")
        return self

    def describe(self) -> str:
        for k in ("exact", "prefix", "regex"):
            v = getattr(self, k)
            if v is not None:
                return f"{k}:{v}"
        return "?"


class PortSelector(IstioModel):
    number: int = Field(ge=1, le=65535)


class Percent(IstioModel):
    value: float = Field(ge=0.0, le=100.0)


class Destination(IstioModel):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class WorkloadSelector(IstioModel):
    match_labels: dict[str, str] = {}


# --- Gateway -----------------------------------------------------------------------------------


class Port(IstioModel):
    number: int = Field(ge=1, le=65535)
    name: str
    protocol: Protocol
    target_port: int | None = Field(default=None, ge=1, le=65535)


class ServerTLSSettings(IstioModel):
    https_redirect: bool | None = None
    mode: Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] | None = (
        None
    )
    credential_name: str | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    subject_alt_names: list[str] = []
    min_protocol_version: Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"] | None = None


class Server(IstioModel):
    port: Port
    hosts: list[str] = Field(min_length=1)
    bind: str | None = None
    tls: ServerTLSSettings | None = None
    name: str | None = None


class Gateway(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "Gateway"

    selector: dict[str, str] = {}
    servers: list[Server] = Field(min_length=1)


# --- VirtualService ----------------------------------------------------------------------------


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = {}
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    query_params: dict[str, StringMatch] = {}
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] = {}
    source_namespace: str | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: int | None = Field(default=None, ge=0)
    headers: Headers | None = None


class RouteDestination(IstioModel):
    destination: Destination
    weight: int | None = Field(default=None, ge=0)


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    scheme: str | None = None
    redirect_code: int | None = Field(default=None, ge=300, le=399)


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None


class HTTPRetry(IstioModel):
    attempts: int = Field(ge=0)
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None

    _d = field_validator("per_try_timeout")(check_duration)


class Delay(IstioModel):
    fixed_delay: str
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)

    _d = field_validator("fixed_delay")(check_duration)


class Abort(IstioModel):
    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Abort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("set exactly one of httpStatus or grpcStatus")
        return self


class HTTPFaultInjection(IstioModel):
    delay: Delay | None = None
    abort: Abort | None = None

    @model_validator(mode="after")
    def _some(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault needs a delay or an abort")
        return self


class CorsPolicy(IstioModel):
    allow_origins: list[StringMatch] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: str | None = None
    allow_credentials: bool | None = None

    _d = field_validator("max_age")(check_duration)


class HTTPRoute(IstioModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    _d = field_validator("timeout")(check_duration)

    @model_validator(mode="after")
    def _route_or_redirect(self) -> HTTPRoute:
        if self.route and self.redirect is not None:
            raise ValueError("a route and a redirect cannot both be set on one http rule")
        if not self.route and self.redirect is None:
            raise ValueError("an http rule needs a route (destinations) or a redirect")
        return self


class L4MatchAttributes(IstioModel):
    destination_subnets: list[str] = []
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str | None = None


class TLSMatchAttributes(IstioModel):
    sni_hosts: list[str] = Field(min_length=1)
    destination_subnets: list[str] = []
    port: int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str | None = None


class TCPRoute(IstioModel):
    match: list[L4MatchAttributes] = []
    route: list[RouteDestination] = Field(min_length=1)


class TLSRoute(IstioModel):
    match: list[TLSMatchAttributes] = Field(min_length=1)
    route: list[RouteDestination] = Field(min_length=1)


class VirtualService(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "VirtualService"

    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = []
    http: list[HTTPRoute] = []
    tls: list[TLSRoute] = []
    tcp: list[TCPRoute] = []
    export_to: list[str] = []

    @model_validator(mode="after")
    def _some_route(self) -> VirtualService:
        if not (self.http or self.tls or self.tcp):
            raise ValueError("a VirtualService needs at least one http, tls or tcp rule")
        return self


# --- DestinationRule ---------------------------------------------------------------------------


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    minimum_ring_size: int | None = None


class LoadBalancerSettings(IstioModel):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHashLB | None = None

    @model_validator(mode="after")
    def _one_of(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set simple or consistentHash, not both")
        return self


class TCPSettings(IstioModel):
    max_connections: int | None = Field(default=None, ge=1)
    connect_timeout: str | None = None

    _d = field_validator("connect_timeout")(check_duration)


class HTTPSettings(IstioModel):
    http1_max_pending_requests: int | None = Field(default=None, ge=1)
    http2_max_requests: int | None = Field(default=None, ge=1)
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    max_retries: int | None = Field(default=None, ge=0)
    idle_timeout: str | None = None

    _d = field_validator("idle_timeout")(check_duration)


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_5xx_errors: int | None = Field(default=None, ge=0)
    consecutive_gateway_errors: int | None = Field(default=None, ge=0)
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)

    _d = field_validator("interval", "base_ejection_time")(check_duration)


class ClientTLSSettings(IstioModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    sni: str | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = []


class Subset(IstioModel):
    name: str = Field(min_length=1)
    labels: dict[str, str] = {}
    traffic_policy: TrafficPolicy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a valid subset name")
        return v


class DestinationRule(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "DestinationRule"

    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
