"""Targets: where a compiled MeshConfig runs. `local` (real Envoy on this machine) and `kubernetes`.

Each target declares what it cannot honour yet; the analyzer reports every such field as MSH0100 (an error),
so nothing is ever ignored silently.
"""

from __future__ import annotations

from collections.abc import Callable

from mesh.analyze.context import TargetCapabilities
from mesh.errors import UnknownTarget


def _only(allowed: set[str], what: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return (
            None
            if value in allowed
            else f"{what} {value!r} is not implemented locally (supported: {', '.join(sorted(allowed))})"
        )

    return check


_WHEN_KEYS = ("request.headers[", "source.principal", "source.namespace", "source.ip", "destination.port")

LOCAL_UNSUPPORTED: dict[str, str] = {
    "Gateway.servers[].tls.serverCertificate": "use credentialName (a directory under STATE_DIR/credentials, or issued)",
    "Gateway.servers[].tls.privateKey": "use credentialName (a directory under STATE_DIR/credentials, or issued)",
    "Gateway.servers[].tls.caCertificates": "use credentialName (its ca.crt) for MUTUAL",
    "Gateway.servers[].tls.subjectAltNames": "client SAN checks at the local gateway are not implemented yet",
    "Gateway.servers[].bind": "the local gateway binds the host address given to `mesh up`",
    "Gateway.servers[].port.targetPort": "the local gateway maps ports itself",
    "VirtualService.tcp": "TCP routes are not translated by the local control plane yet",
    "VirtualService.tls": "TLS (SNI) routes are not translated by the local control plane yet",
    "VirtualService.exportTo": "visibility (exportTo) is not implemented locally: everything is visible",
    "DestinationRule.exportTo": "visibility (exportTo) is not implemented locally: everything is visible",
    "VirtualService.http[].match[].sourceNamespace": "sourceNamespace matching is not implemented locally",
    "VirtualService.http[].retries.retryRemoteLocalities": "there are no localities on one machine",
    "AuthorizationPolicy.rules[].from[].source.requestPrincipals": "JWT (RequestAuthentication) is not implemented locally",
    "AuthorizationPolicy.rules[].from[].source.notRequestPrincipals": "JWT (RequestAuthentication) is not implemented locally",
}
for _scope in ("DestinationRule.trafficPolicy", "DestinationRule.subsets[].trafficPolicy"):
    for _f in ("clientCertificate", "privateKey", "caCertificates", "credentialName", "subjectAltNames", "sni"):
        LOCAL_UNSUPPORTED[f"{_scope}.tls.{_f}"] = "only ISTIO_MUTUAL and DISABLE are implemented locally"

LOCAL_UNSUPPORTED_VALUES: dict[str, Callable[[object], str | None]] = {
    "Gateway.servers[].port.protocol": _only({"HTTP", "HTTP2", "GRPC", "HTTPS"}, "gateway protocol"),
    "Gateway.servers[].tls.mode": _only({"SIMPLE", "MUTUAL"}, "gateway TLS mode"),
    "AuthorizationPolicy.action": _only({"ALLOW", "DENY"}, "action"),
    "AuthorizationPolicy.rules[].when[].key": lambda v: (
        None
        if str(v).startswith(_WHEN_KEYS)
        else f"condition key {v!r} is not implemented locally (supported: request.headers[...], source.principal, "
        "source.namespace, source.ip, destination.port)"
    ),
    "Service.ports[].protocol": _only({"http", "http2", "grpc"}, "port protocol"),
}
for _scope in ("DestinationRule.trafficPolicy", "DestinationRule.subsets[].trafficPolicy"):
    for _p in ("", ".portLevelSettings[]"):
        LOCAL_UNSUPPORTED_VALUES[f"{_scope}{_p}.tls.mode"] = _only({"DISABLE", "ISTIO_MUTUAL"}, "client TLS mode")
        LOCAL_UNSUPPORTED_VALUES[f"{_scope}{_p}.loadBalancer.simple"] = _only(
            {"UNSPECIFIED", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"}, "load balancer"
        )

LOCAL = TargetCapabilities(
    name="local", unsupported=LOCAL_UNSUPPORTED, unsupported_values=LOCAL_UNSUPPORTED_VALUES, needs="command"
)
KUBERNETES = TargetCapabilities(name="kubernetes", needs="image")


def capabilities(target: str) -> TargetCapabilities:
    if target == "local":
        return LOCAL
    if target == "kubernetes":
        return KUBERNETES
    raise UnknownTarget(target, ["kubernetes", "local"])
