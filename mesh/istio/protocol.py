"""Protocol selection, as Istio makes it (`pkg/config/protocol`, `pkg/config/kube/conversion.go`): what a service
port carries decides whether sidecars route it as HTTP (by Host and path) or as TCP (by address, port and SNI).

The choice, first that applies: the port's `appProtocol` (Kubernetes' field; `kubernetes.io/h2c` is HTTP/2), our
`protocol` shorthand (rendered as `appProtocol`), the port name's prefix before the first `-` (`http-web`,
`tcp-db`, `grpc-web-ui`), else TCP. Istio would sniff an unnamed port's first bytes; without sniffing, TCP is the
choice that never breaks a connection (HTTP still flows, routed as bytes).
"""

from __future__ import annotations

from typing import Literal

from mesh.api._base import istio_name
from mesh.api.config import MeshConfig
from mesh.api.security import Rule
from mesh.api.workloads import ServicePort
from mesh.istio.gateways import binds_mesh

Protocol = Literal["HTTP", "HTTP2", "GRPC", "GRPC-Web", "HTTPS", "TCP", "TLS", "Mongo", "Redis", "MySQL", "UDP"]

_NAMES: dict[str, Protocol] = {
    "http": "HTTP",
    "http2": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC-Web",
    "https": "HTTPS",
    "tcp": "TCP",
    "tls": "TLS",
    "mongo": "Mongo",
    "redis": "Redis",
    "mysql": "MySQL",
    "udp": "UDP",
}
# Kubernetes' standard appProtocol values (KEP-3726)
_KUBERNETES_APP_PROTOCOLS: dict[str, Protocol] = {
    "kubernetes.io/h2c": "HTTP2",
    "kubernetes.io/ws": "HTTP",
    "kubernetes.io/wss": "HTTPS",
}


def parse_protocol(value: str) -> Protocol | None:
    """Istio's `protocol.Parse`: case-insensitive, None for what it does not know."""
    value = value.lower()
    return _KUBERNETES_APP_PROTOCOLS.get(value) or _NAMES.get(value)


def protocol_of_name(name: str) -> Protocol | None:
    """The protocol a port name declares: `grpc-web...` first, else the part before the first `-`."""
    if name.lower().startswith("grpc-web"):
        return "GRPC-Web"
    return parse_protocol(name.split("-", 1)[0])


def port_protocol(port: ServicePort) -> Protocol:
    """What this service port carries (the module docstring gives the order)."""
    for declared in (port.app_protocol, port.protocol):
        if declared:
            chosen = parse_protocol(declared)
            if chosen is not None and chosen != "UDP":
                return chosen
    return protocol_of_name(port.name) or "TCP"


def is_http(protocol: Protocol) -> bool:
    return protocol in ("HTTP", "HTTP2", "GRPC", "GRPC-Web")


def is_http2(protocol: Protocol) -> bool:
    return protocol in ("HTTP2", "GRPC", "GRPC-Web")


def is_tls(protocol: Protocol) -> bool:
    """TLS from the client (HTTPS, TLS): routed by SNI, never terminated by the sidecar."""
    return protocol in ("HTTPS", "TLS")


def is_http_port(port: ServicePort) -> bool:
    return is_http(port_protocol(port))


def app_protocol_value(port: ServicePort) -> str:
    """The Kubernetes `appProtocol` to render: what the user gave, else the selected protocol in lower case (so
    Istio on the cluster selects exactly what the local mesh selected)."""
    return port.app_protocol or port.protocol or port_protocol(port).lower()


_HTTP_OPERATION_FIELDS = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")
_HTTP_SOURCE_FIELDS = ("request_principals", "not_request_principals")
_HTTP_CONDITION_PREFIXES = ("request.headers", "request.auth.", "request.regex.headers")


def http_only_fields(rule: Rule) -> list[str]:
    """The parts of an AuthorizationPolicy rule only an HTTP request has (Istio cannot check them on a TCP
    connection: an ALLOW rule with any of them matches nothing there, a DENY rule drops them and denies more)."""
    out = []
    for i, t in enumerate(rule.to):
        out += [f"to[{i}].operation.{istio_name(f)}" for f in _HTTP_OPERATION_FIELDS if getattr(t.operation, f)]
    for i, f_ in enumerate(rule.from_):
        out += [f"from[{i}].source.{istio_name(f)}" for f in _HTTP_SOURCE_FIELDS if getattr(f_.source, f)]
    out += [f"when[{i}].key" for i, c in enumerate(rule.when) if c.key.startswith(_HTTP_CONDITION_PREFIXES)]
    return out


def tcp_rule(rule: Rule, action: str) -> Rule | None:
    """The rule as Istio applies it to a TCP connection: None (matches nothing) for an ALLOW rule with HTTP-only
    fields; for DENY, the rule without them."""
    if not http_only_fields(rule):
        return rule
    if action != "DENY":
        return None
    stripped = rule.model_copy(deep=True)
    for t in stripped.to:
        for f in _HTTP_OPERATION_FIELDS:
            setattr(t.operation, f, [])
    for f_ in stripped.from_:
        for f in _HTTP_SOURCE_FIELDS:
            setattr(f_.source, f, [])
    stripped.when = [c for c in stripped.when if not c.key.startswith(_HTTP_CONDITION_PREFIXES)]
    return stripped


def routed_as_connections(config: MeshConfig) -> list[str]:
    """What in `config` a sidecar must route as connections (TCP-family service ports, mesh-bound tcp/tls
    routes): the parts an app can only reach through transparent interception, never through HTTP_PROXY."""
    out = [
        f"Service {s.namespace}/{s.name} port {p.number} ({port_protocol(p)})"
        for s in config.services
        for p in s.ports
        if not is_http_port(p)
    ]
    out += [
        f"VirtualService {vs.namespace}/{vs.name} ({' and '.join(k for k in ('tcp', 'tls') if getattr(vs, k))} routes)"
        for vs in config.virtual_services
        if (vs.tcp or vs.tls) and binds_mesh(vs)
    ]
    return out
