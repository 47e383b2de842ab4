"""Targets: where a compiled MeshConfig runs. `local` (real Envoy on this machine) and `kubernetes`.

Each target declares what it cannot honour yet; the analyzer reports every such field as MSH0100 (an error),
so nothing is ever ignored silently.
"""

from __future__ import annotations

from collections.abc import Callable

from mesh.analyze.context import TargetCapabilities
from mesh.api.envoyfilter import EnvoyFilter
from mesh.api.security import RequestAuthentication
from mesh.api.telemetry import Telemetry
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
    "VirtualService.tcp[].match[].destinationSubnets": "destination subnets are not matched locally",
    "VirtualService.tcp[].match[].sourceSubnet": "source subnets are not matched locally",
    "VirtualService.tls[].match[].destinationSubnets": "destination subnets are not matched locally",
    "VirtualService.http[].retries.retryRemoteLocalities": "there are no localities on one machine",
    "AuthorizationPolicy.rules[].from[].source.requestPrincipals": "JWT (RequestAuthentication) is not implemented locally",
    "AuthorizationPolicy.rules[].from[].source.notRequestPrincipals": "JWT (RequestAuthentication) is not implemented locally",
}
# Kinds the local control plane does not translate yet: every top-level field of theirs is reported.
for _kind in (EnvoyFilter, RequestAuthentication, Telemetry):
    for _name, _field in _kind.model_fields.items():
        if _name not in ("name", "namespace", "labels", "annotations"):
            LOCAL_UNSUPPORTED[f"{_kind.kind}.{_field.alias or _name}"] = (
                f"{_kind.kind} is not translated by the local control plane yet"
            )
# Sidecar: egress hosts, workloadSelector and outboundTrafficPolicy.mode are translated (mesh/istio/sidecar.py)
for _path, _why in {
    "Sidecar.ingress": "Sidecar ingress listeners are not translated locally yet: inbound listeners follow the service's ports",
    "Sidecar.inboundConnectionPool": "inboundConnectionPool is not translated locally",
    "Sidecar.egress[].bind": "egress listeners bind where the local data path puts them (the outbound port)",
    "Sidecar.egress[].captureMode": "the capture mode is chosen per mesh (`mesh up --interception`), not per listener",
    "Sidecar.outboundTrafficPolicy.egressProxy": "egressProxy is not translated locally",
}.items():
    LOCAL_UNSUPPORTED[_path] = _why
for _path, _why in {
    "Gateway.servers[].defaultEndpoint": "the local gateway does not forward to a default endpoint",
    "Gateway.servers[].tls.caCrl": "certificate revocation lists are not implemented locally",
    "Gateway.servers[].tls.credentialNames": "use one credentialName",
    "Gateway.servers[].tls.caCertCredentialName": "use credentialName (its ca.crt) for MUTUAL",
    "Gateway.servers[].tls.tlsCertificates": "use credentialName",
    "Gateway.servers[].tls.verifyCertificateSpki": "client certificate pinning is not implemented locally",
    "Gateway.servers[].tls.verifyCertificateHash": "client certificate pinning is not implemented locally",
    "Gateway.servers[].tls.minProtocolVersion": "TLS versions at the local gateway are Envoy's defaults",
    "Gateway.servers[].tls.maxProtocolVersion": "TLS versions at the local gateway are Envoy's defaults",
    "Gateway.servers[].tls.cipherSuites": "cipher suites at the local gateway are Envoy's defaults",
    "VirtualService.http[].match[].statPrefix": "per-match stats prefixes are not implemented locally",
    "VirtualService.http[].directResponse": "direct responses are not translated locally yet",
    "VirtualService.http[].delegate": "delegate VirtualServices are not translated locally yet",
    "VirtualService.http[].mirrors": "mirroring is not translated locally yet",
    "VirtualService.http[].mirrorPercent": "mirroring is not translated locally yet",
    "VirtualService.http[].redirect.derivePort": "derivePort is not translated locally yet",
    "VirtualService.http[].rewrite.uriRegexRewrite": "regex rewrites are not translated locally yet",
    "VirtualService.http[].retries.retryIgnorePreviousHosts": "retryIgnorePreviousHosts is not translated locally",
    "VirtualService.http[].retries.backoff": "retry backoff is not translated locally",
    # Istio's validation rejects it too ("HTTP/2 abort fault injection not supported yet"): Envoy's fault filter
    # can abort with an HTTP or a gRPC status, or a header's, but has no HTTP/2 error (RST_STREAM code) abort
    "VirtualService.http[].fault.abort.http2Error": "Envoy cannot abort with an HTTP/2 error (Istio rejects it too): "
    "use grpcStatus or httpStatus",
    "VirtualService.http[].corsPolicy.allowOrigin": "use allowOrigins (the deprecated allowOrigin is not translated)",
    "VirtualService.http[].corsPolicy.unmatchedPreflights": "unmatchedPreflights is not translated locally",
    "DestinationRule.workloadSelector": "DestinationRule workloadSelector is not implemented locally",
    "AuthorizationPolicy.provider": "CUSTOM authorization (ext_authz providers) is not implemented locally",
    "AuthorizationPolicy.targetRef": "targetRef (Gateway API attachment) is not implemented locally",
    "AuthorizationPolicy.targetRefs": "targetRefs (Gateway API attachment) is not implemented locally",
    "AuthorizationPolicy.rules[].from[].source.serviceAccounts": "serviceAccounts sources are not translated locally",
    "AuthorizationPolicy.rules[].from[].source.notServiceAccounts": "serviceAccounts sources are not translated locally",
    "AuthorizationPolicy.rules[].from[].source.remoteIpBlocks": "remoteIpBlocks (X-Forwarded-For) is not translated locally",
    "AuthorizationPolicy.rules[].from[].source.notRemoteIpBlocks": "remoteIpBlocks (X-Forwarded-For) is not translated locally",
    "AuthorizationPolicy.rules[].from[].source.trustDomains": "trust domains are not translated locally",
    "AuthorizationPolicy.rules[].from[].source.notTrustDomains": "trust domains are not translated locally",
}.items():
    LOCAL_UNSUPPORTED[_path] = _why
for _scope in ("DestinationRule.trafficPolicy", "DestinationRule.subsets[].trafficPolicy"):
    for _f, _why in {
        "tunnel": "tunnelling (CONNECT/POST) is not implemented locally",
        "proxyProtocol": "PROXY protocol upstream is not implemented locally",
        "retryBudget": "retry budgets are not translated locally",
        "loadBalancer.localityLbSetting": "there are no localities on one machine",
        "loadBalancer.warmup": "slow-start warmup is not translated locally yet",
        "loadBalancer.warmupDurationSecs": "slow-start warmup is not translated locally yet",
        "loadBalancer.consistentHash.httpCookie": "cookie hashing is not translated locally yet",
        "loadBalancer.consistentHash.ringHash": "ring hash settings are not translated locally yet",
        "loadBalancer.consistentHash.maglev": "maglev is not translated locally yet",
        "connectionPool.tcp.tcpKeepalive": "TCP keepalive is not translated locally yet",
        "connectionPool.tcp.maxConnectionDuration": "maxConnectionDuration is not translated locally yet",
        "connectionPool.tcp.idleTimeout": "TCP idleTimeout is not translated locally yet",
        "outlierDetection.consecutiveErrors": "use consecutive5xxErrors (the deprecated consecutiveErrors is not translated)",
        "outlierDetection.splitExternalLocalOriginErrors": "local-origin error splitting is not translated locally",
        "outlierDetection.consecutiveLocalOriginFailures": "local-origin error splitting is not translated locally",
        "tls.insecureSkipVerify": "insecureSkipVerify is not translated locally (give caCertificates)",
        "tls.caCrl": "certificate revocation lists are not implemented locally",
    }.items():
        LOCAL_UNSUPPORTED[f"{_scope}.{_f}"] = _why
for _path, _why in {  # ServiceEntry and WorkloadEntry: translated (serviceentry.py) but for these
    "ServiceEntry.endpoints[].network": "there is one network locally",
    "ServiceEntry.endpoints[].locality": "there are no localities on one machine",
    "ServiceEntry.endpoints[].weight": "endpoint weights are not translated locally yet",
    "WorkloadEntry.network": "there is one network locally",
    "WorkloadEntry.locality": "there are no localities on one machine",
    "WorkloadEntry.weight": "endpoint weights are not translated locally yet",
}.items():
    LOCAL_UNSUPPORTED[_path] = _why

LOCAL_UNSUPPORTED_VALUES: dict[str, Callable[[object], str | None]] = {
    "Gateway.servers[].port.protocol": _only(
        {"HTTP", "HTTP2", "GRPC", "HTTPS", "TCP", "TLS", "MONGO", "MYSQL", "REDIS"}, "gateway protocol"
    ),
    "Gateway.servers[].tls.mode": _only(
        {"SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH", "AUTO_PASSTHROUGH"}, "gateway TLS mode"
    ),
    "AuthorizationPolicy.action": _only({"ALLOW", "DENY"}, "action"),
    "AuthorizationPolicy.rules[].when[].key": lambda v: (
        None
        if str(v).startswith(_WHEN_KEYS)
        else f"condition key {v!r} is not implemented locally (supported: request.headers[...], source.principal, "
        "source.namespace, source.ip, destination.port)"
    ),
    "ServiceEntry.resolution": _only({"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"}, "resolution"),
}
for _scope in ("DestinationRule.trafficPolicy", "DestinationRule.subsets[].trafficPolicy"):
    for _p in ("", ".portLevelSettings[]"):
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
