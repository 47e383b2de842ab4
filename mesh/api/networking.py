"""networking.istio.io/v1: Gateway, VirtualService, DestinationRule.

Field names are Istio's in snake_case; the wire form (`to_manifest`) uses Istio's camelCase.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import INT32_MAX, UINT32_MAX, Float, Host, Int, IstioModel, Resource, check_duration, check_host

NETWORKING = "networking.istio.io/v1"

Protocol = Literal[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"
]
_PROTOCOLS = {p.upper(): p for p in Protocol.__args__}  # type: ignore[attr-defined]


def canonical_protocol(value: object) -> object:
    """Istio parses protocols case-insensitively (`tls`, `Http`); we keep its canonical spelling."""
    if isinstance(value, str):
        return _PROTOCOLS.get(value.upper(), value)
    return value


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
    number: Int = Field(ge=1, le=65535)


class Percent(IstioModel):
    value: Float = Field(ge=0.0, le=100.0)


class Destination(IstioModel):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v == "*":
            raise ValueError("a destination host cannot be '*'")
        return check_host(v)


class WorkloadSelector(IstioModel):
    match_labels: dict[str, str] = {}


class PolicyTargetReference(IstioModel):
    """A Kubernetes Gateway API object a policy attaches to (instead of a selector)."""

    group: str | None = None
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None


# --- Gateway -----------------------------------------------------------------------------------


class Port(IstioModel):
    number: Int = Field(ge=1, le=65535)
    name: str
    protocol: Protocol
    target_port: Int | None = Field(default=None, ge=1, le=65535)

    _p = field_validator("protocol", mode="before")(canonical_protocol)


class TLSCertificate(IstioModel):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


TLSProtocol = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLSSettings(IstioModel):
    https_redirect: bool | None = None
    mode: Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"] | None = (
        None
    )
    credential_name: str | None = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_names: list[str] = Field(default=[], max_length=2)
    ca_cert_credential_name: str | None = None
    tls_certificates: list[TLSCertificate] = Field(default=[], max_length=2)
    subject_alt_names: list[str] = []
    verify_certificate_spki: list[str] = []
    verify_certificate_hash: list[str] = []
    min_protocol_version: TLSProtocol | None = None
    max_protocol_version: TLSProtocol | None = None
    cipher_suites: list[str] = []

    @model_validator(mode="after")
    def _one_credential(self) -> ServerTLSSettings:
        given = [n for n in ("credential_name", "credential_names", "tls_certificates") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError("set only one of credentialName, credentialNames and tlsCertificates")
        return self


def check_gateway_host(host: str) -> str:
    """A server host is `[namespace/]dnsName`; the namespace may be `*`, `.` or `~`."""
    ns, sep, name = host.rpartition("/")
    if sep and ns not in ("*", ".", "~") and not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ns):
        raise ValueError(f"host {host!r}: {ns!r} is not a namespace")
    check_host(name)
    return host


class Server(IstioModel):
    port: Port
    hosts: list[str] = Field(min_length=1)
    bind: str | None = None
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return [check_gateway_host(h) for h in v]


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
    port: Int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    query_params: dict[str, StringMatch] = {}
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] = {}
    source_namespace: str | None = None
    stat_prefix: str | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


# Weights are int32 in Istio's API, and Envoy sums a route's weights into a uint32.
Weight = Field(default=None, ge=0, le=INT32_MAX)


def _weights_fit(route: list[HTTPRouteDestination] | list[RouteDestination]) -> None:
    if sum(d.weight or 0 for d in route) > UINT32_MAX:
        raise ValueError(f"the weights of one route add up to more than {UINT32_MAX}")


class HTTPRouteDestination(IstioModel):
    destination: Destination
    weight: Int | None = Weight
    headers: Headers | None = None


class RouteDestination(IstioModel):
    destination: Destination
    weight: Int | None = Weight


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: Int | None = Field(default=None, ge=1, le=65535)
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: Int | None = Field(default=None, ge=300, le=399)

    @model_validator(mode="after")
    def _one_port(self) -> HTTPRedirect:
        if self.port is not None and self.derive_port is not None:
            raise ValueError("set port or derivePort, not both")
        return self


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None  # base64, as protobuf JSON writes bytes

    @model_validator(mode="after")
    def _one_of(self) -> HTTPBody:
        if (self.string is None) == (self.bytes is None):
            raise ValueError("set exactly one of string or bytes")
        return self


class HTTPDirectResponse(IstioModel):
    status: Int = Field(ge=200, le=599)
    body: HTTPBody | None = None


class Delegate(IstioModel):
    name: str = Field(min_length=1)
    namespace: str | None = None


class RegexRewrite(IstioModel):
    match: str | None = None
    rewrite: str | None = None


class HTTPRewrite(IstioModel):
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one_uri(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("set uri or uriRegexRewrite, not both")
        return self


class HTTPRetry(IstioModel):
    attempts: Int = Field(ge=0, le=INT32_MAX)
    per_try_timeout: str | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: str | None = None

    _d = field_validator("per_try_timeout", "backoff")(check_duration)


class Delay(IstioModel):
    fixed_delay: str
    exponential_delay: str | None = None  # in Istio's API, but its webhook rejects it ("not supported yet")
    percentage: Percent | None = None
    percent: Int | None = Field(default=None, ge=0, le=100)  # deprecated by Istio, still served

    _d = field_validator("fixed_delay", "exponential_delay")(check_duration)

    @model_validator(mode="before")
    @classmethod
    def _exponential(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("exponentialDelay" in data or "exponential_delay" in data):
            raise ValueError("exponentialDelay is not supported yet by Istio: use fixedDelay")
        return data


class Abort(IstioModel):
    http_status: Int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    http2_error: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="before")
    @classmethod
    def _removed_percent(cls, data: Any) -> Any:
        if isinstance(data, dict) and "percent" in data:
            raise ValueError(
                "abort.percent was removed from Istio's API: use percentage: {value: N} (a float from 0 to 100)"
            )
        return data

    @model_validator(mode="after")
    def _one_of(self) -> Abort:
        if sum(v is not None for v in (self.http_status, self.grpc_status, self.http2_error)) != 1:
            raise ValueError("set exactly one of httpStatus, grpcStatus or http2Error")
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
    allow_origin: list[str] = []  # deprecated by Istio in favour of allowOrigins
    allow_origins: list[StringMatch] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: str | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None = None

    _d = field_validator("max_age")(check_duration)


class HTTPMirrorPolicy(IstioModel):
    destination: Destination
    percentage: Percent | None = None


class HTTPRoute(IstioModel):
    name: str | None = None
    match: list[HTTPMatchRequest] = []
    route: list[HTTPRouteDestination] = []
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: str | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = []
    mirror_percent: Int | None = Field(default=None, ge=0, le=100)  # deprecated by Istio: use mirrorPercentage
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None

    _d = field_validator("timeout")(check_duration)

    @model_validator(mode="after")
    def _one_action(self) -> HTTPRoute:
        actions = [n for n in ("route", "redirect", "direct_response", "delegate") if getattr(self, n)]
        if len(actions) > 1 and actions != ["route", "delegate"]:
            names = {"route": "a route", "redirect": "a redirect", "direct_response": "a directResponse"}
            raise ValueError(f"{' and '.join(names.get(a, a) for a in actions)} cannot both be set on one http rule")
        if not actions:
            raise ValueError("an http rule needs a route (destinations), a redirect, a directResponse or a delegate")
        if self.delegate is not None and self.route:
            raise ValueError("a delegate rule cannot also have a route")
        if self.mirror is not None and self.mirrors:
            raise ValueError("set mirror or mirrors, not both")
        _weights_fit(self.route)
        return self


class L4MatchAttributes(IstioModel):
    destination_subnets: list[str] = []
    port: Int | None = Field(default=None, ge=1, le=65535)
    source_subnet: str | None = None
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str | None = None


class TLSMatchAttributes(IstioModel):
    sni_hosts: list[str] = Field(min_length=1)
    destination_subnets: list[str] = []
    port: Int | None = Field(default=None, ge=1, le=65535)
    source_labels: dict[str, str] = {}
    gateways: list[str] = []
    source_namespace: str | None = None


class TCPRoute(IstioModel):
    match: list[L4MatchAttributes] = []
    route: list[RouteDestination] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> TCPRoute:
        _weights_fit(self.route)
        return self


class TLSRoute(IstioModel):
    match: list[TLSMatchAttributes] = Field(min_length=1)
    route: list[RouteDestination] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> TLSRoute:
        _weights_fit(self.route)
        return self


class VirtualService(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "VirtualService"

    hosts: list[Host] = Field(min_length=1)
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


class HTTPCookieAttribute(IstioModel):
    name: str = Field(min_length=1)
    value: str | None = None


class HTTPCookie(IstioModel):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: str | None = None
    attributes: list[HTTPCookieAttribute] = []

    _d = field_validator("ttl")(check_duration)


class RingHash(IstioModel):
    minimum_ring_size: Int | None = Field(default=None, ge=0)


class MagLev(IstioModel):
    table_size: Int | None = Field(default=None, ge=0)


class ConsistentHashLB(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: Int | None = Field(default=None, ge=0)  # deprecated by Istio: use ringHash

    @model_validator(mode="after")
    def _one_of(self) -> ConsistentHashLB:
        keys = [
            k
            for k in ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name")
            if getattr(self, k) is not None
        ]
        if len(keys) > 1:
            raise ValueError("set only one hash key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
        if self.ring_hash is not None and self.maglev is not None:
            raise ValueError("set ringHash or maglev, not both")
        return self


class LocalityDistribute(IstioModel):
    from_: str | None = None
    to: dict[str, Int] = {}


class LocalityFailover(IstioModel):
    from_: str | None = None
    to: str | None = None


class LocalityLoadBalancerSetting(IstioModel):
    distribute: list[LocalityDistribute] = []
    failover: list[LocalityFailover] = []
    failover_priority: list[str] = []
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one_of(self) -> LocalityLoadBalancerSetting:
        if self.distribute and self.failover:
            raise ValueError("set distribute or failover, not both")
        return self


class WarmupConfiguration(IstioModel):
    duration: str
    minimum_percent: Float | None = Field(default=None, ge=0.0, le=100.0)
    aggression: Float | None = Field(default=None, ge=1.0)

    _d = field_validator("duration")(check_duration)


class LoadBalancerSettings(IstioModel):
    simple: Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    warmup_duration_secs: str | None = None  # deprecated by Istio: use warmup
    warmup: WarmupConfiguration | None = None

    _d = field_validator("warmup_duration_secs")(check_duration)

    @model_validator(mode="after")
    def _one_of(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("set simple or consistentHash, not both")
        if self.warmup is not None and self.warmup_duration_secs is not None:
            raise ValueError("set warmup or warmupDurationSecs, not both")
        return self


class TcpKeepalive(IstioModel):
    probes: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    time: str | None = None
    interval: str | None = None

    _d = field_validator("time", "interval")(check_duration)


class TCPSettings(IstioModel):
    max_connections: Int | None = Field(default=None, ge=1, le=INT32_MAX)
    connect_timeout: str | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: str | None = None
    idle_timeout: str | None = None

    _d = field_validator("connect_timeout", "max_connection_duration", "idle_timeout")(check_duration)


class ConnectionKeepalive(IstioModel):
    interval: str | None = None
    timeout: str | None = None

    _d = field_validator("interval", "timeout")(check_duration)


class HTTPSettings(IstioModel):
    http1_max_pending_requests: Int | None = Field(default=None, ge=1, le=INT32_MAX)
    http2_max_requests: Int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_requests_per_connection: Int | None = Field(default=None, ge=0, le=INT32_MAX)
    max_retries: Int | None = Field(default=None, ge=0, le=INT32_MAX)
    idle_timeout: str | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Int | None = Field(default=None, ge=0, le=INT32_MAX)
    http2_keep_alive: ConnectionKeepalive | None = None  # istio/api after 1.30 (named in our issue list)

    _d = field_validator("idle_timeout")(check_duration)


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_errors: Int | None = Field(default=None, ge=0, le=INT32_MAX)  # deprecated by Istio
    split_external_local_origin_errors: bool | None = None
    consecutive_local_origin_failures: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    consecutive_5xx_errors: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    consecutive_gateway_errors: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    interval: str | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: Int | None = Field(default=None, ge=0, le=100)
    min_health_percent: Int | None = Field(default=None, ge=0, le=100)

    _d = field_validator("interval", "base_ejection_time")(check_duration)

    @model_validator(mode="after")
    def _local_origin(self) -> OutlierDetection:
        if self.consecutive_local_origin_failures is not None and not self.split_external_local_origin_errors:
            raise ValueError("consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true")
        return self


class ClientTLSSettings(IstioModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = []
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: str | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(IstioModel):
    protocol: Literal["CONNECT", "POST"] | None = None
    target_host: str = Field(min_length=1)
    target_port: Int = Field(ge=1, le=65535)


class ProxyProtocol(IstioModel):
    version: Literal["V1", "V2"] | None = None


class RetryBudget(IstioModel):
    percent: Float | None = Field(default=None, ge=0.0, le=100.0)
    min_retry_concurrency: Int | None = Field(default=None, ge=0, le=UINT32_MAX)


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = []
    tunnel: TunnelSettings | None = None
    proxy_protocol: ProxyProtocol | None = None
    retry_budget: RetryBudget | None = None


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

    host: Host
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = []
    export_to: list[str] = []
    workload_selector: WorkloadSelector | None = None
