"""Shortcuts for the common cases. Each returns ordinary typed objects: nothing is hidden."""

from __future__ import annotations

from collections.abc import Mapping

from mesh.api.networking import (
    Abort,
    Delay,
    Destination,
    DestinationRule,
    Gateway,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    Percent,
    Port,
    PortSelector,
    Server,
    ServerTLSSettings,
    StringMatch,
    Subset,
    TrafficPolicy,
    VirtualService,
    WorkloadSelector,
)
from mesh.api.security import (
    AuthorizationPolicy,
    PeerAuthentication,
    PeerAuthenticationMTLS,
    Rule,
    RuleFrom,
    Source,
)
from mesh.api.workloads import Service


def to(
    host: str, subset: str | None = None, *, port: int | None = None, weight: int | None = None
) -> HTTPRouteDestination:
    """One destination of an http rule."""
    return HTTPRouteDestination(
        destination=Destination(host=host, subset=subset, port=PortSelector(number=port) if port else None),
        weight=weight,
    )


def split(host: str, weights: Mapping[str, int], *, port: int | None = None, **rule: object) -> HTTPRoute:
    """A weighted split across subsets: `split("reviews", {"v1": 90, "v2": 10})`."""
    return HTTPRoute(route=[to(host, s, port=port, weight=w) for s, w in weights.items()], **rule)


def when_header(
    name: str, *, exact: str | None = None, prefix: str | None = None, regex: str | None = None
) -> HTTPMatchRequest:
    return HTTPMatchRequest(headers={name: StringMatch(exact=exact, prefix=prefix, regex=regex)})


def when_path(*, exact: str | None = None, prefix: str | None = None, regex: str | None = None) -> HTTPMatchRequest:
    return HTTPMatchRequest(uri=StringMatch(exact=exact, prefix=prefix, regex=regex))


def canary(
    service: str,
    *,
    stable: str,
    candidate: str,
    weight: int,
    namespace: str = "default",
    name: str | None = None,
) -> VirtualService:
    """Send `weight` percent of traffic for `service` to the candidate subset, the rest to stable."""
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be between 0 and 100, got {weight}")
    return VirtualService(
        name=name or service,
        namespace=namespace,
        hosts=[service],
        http=[split(service, {stable: 100 - weight, candidate: weight})],
    )


def header_ab(
    service: str,
    *,
    header: str,
    value: str,
    match_subset: str,
    default: HTTPRoute,
    namespace: str = "default",
    name: str | None = None,
) -> VirtualService:
    """Requests whose `header` equals `value` go to `match_subset`; everything else follows `default`."""
    return VirtualService(
        name=name or service,
        namespace=namespace,
        hosts=[service],
        http=[
            HTTPRoute(match=[when_header(header, exact=value)], route=[to(service, match_subset)]),
            default,
        ],
    )


def subsets_by_version(service: Service, traffic_policy: TrafficPolicy | None = None) -> DestinationRule:
    """A DestinationRule with one subset per version of the service (`version=<name>`)."""
    return DestinationRule(
        name=service.name,
        namespace=service.namespace,
        host=service.name,
        traffic_policy=traffic_policy,
        subsets=[Subset(name=v.name, labels={"version": v.name}) for v in service.versions],
    )


def ingress(
    name: str,
    *,
    hosts: list[str],
    routes: Mapping[str, str | HTTPRoute],
    port: int = 80,
    namespace: str = "default",
    selector: Mapping[str, str] | None = None,
    credential_name: str | None = None,
) -> tuple[Gateway, VirtualService]:
    """A Gateway for `hosts` plus a VirtualService mapping path prefixes to services.

    `routes={"/productpage": "productpage"}` routes that prefix to the service's first port.
    """
    tls = ServerTLSSettings(mode="SIMPLE", credential_name=credential_name) if credential_name else None
    proto = "HTTPS" if tls else "HTTP"
    gateway = Gateway(
        name=name,
        namespace=namespace,
        selector=dict(selector or {"istio": "ingressgateway"}),
        servers=[Server(port=Port(number=port, name=f"{proto.lower()}-{port}", protocol=proto), hosts=hosts, tls=tls)],
    )
    rules = []
    for prefix, target in routes.items():
        if isinstance(target, HTTPRoute):
            rule = target.model_copy(update={"match": [when_path(prefix=prefix)]})
        else:
            rule = HTTPRoute(match=[when_path(prefix=prefix)], route=[to(target)])
        rules.append(rule)
    vs = VirtualService(name=name, namespace=namespace, hosts=hosts, gateways=[name], http=rules)
    return gateway, vs


def strict_mtls(namespace: str = "istio-system", name: str = "default") -> PeerAuthentication:
    """STRICT mTLS; in the root namespace (istio-system) it applies mesh-wide."""
    return PeerAuthentication(name=name, namespace=namespace, mtls=PeerAuthenticationMTLS(mode="STRICT"))


def delay(fixed: str, percent: float = 100.0) -> HTTPFaultInjection:
    return HTTPFaultInjection(delay=Delay(fixed_delay=fixed, percentage=Percent(value=percent)))


def abort(http_status: int, percent: float = 100.0) -> HTTPFaultInjection:
    return HTTPFaultInjection(abort=Abort(http_status=http_status, percentage=Percent(value=percent)))


def retries(attempts: int, per_try_timeout: str | None = None, retry_on: str | None = None) -> HTTPRetry:
    return HTTPRetry(attempts=attempts, per_try_timeout=per_try_timeout, retry_on=retry_on)


def allow_only_from(target: Service, *callers: Service, name: str | None = None) -> AuthorizationPolicy:
    """ALLOW requests to `target` only from the given services' identities; everyone else gets 403."""
    return AuthorizationPolicy(
        name=name or f"{target.name}-allow-callers",
        namespace=target.namespace,
        selector=WorkloadSelector(match_labels={"app": target.name}),
        action="ALLOW",
        rules=[
            Rule(from_=[RuleFrom(source=Source(principals=[c.identity.removeprefix("spiffe://") for c in callers]))])
        ],
    )
