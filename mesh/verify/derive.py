"""Checks derived from the policies themselves: what a config declares is what the data path must show.

Every weighted route's split, every abort fault's status fraction, STRICT mTLS refusing plaintext, an ALLOW
policy denying a caller it does not name, and each ingress route answering. A rule whose request cannot be
constructed (regex matches, a route shadowed by an earlier one, a subset without a `version` label) is skipped and
said so, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, HTTPMatchRequest, HTTPRoute, StringMatch, VirtualService
from mesh.api.security import AuthorizationPolicy
from mesh.api.workloads import Service, resolve_host
from mesh.verify.probes import (
    DeniedProbe,
    FractionProbe,
    PlaintextRefusedProbe,
    Probe,
    SplitProbe,
    StatusProbe,
)


def service_for(config: MeshConfig, host: str, namespace: str = "default") -> Service | None:
    fqdn = resolve_host(host, namespace)
    return next((s for s in config.services if s.fqdn == fqdn), None)


def rule_for(config: MeshConfig, host: str, namespace: str = "default") -> DestinationRule | None:
    """The DestinationRule a client in `namespace` gets for `host`: its own namespace's first (as Istio picks)."""
    fqdn = resolve_host(host, namespace)
    rules = [d for d in config.destination_rules if resolve_host(d.host, d.namespace) == fqdn]
    rules.sort(key=lambda d: (d.namespace != namespace, d.namespace, d.name))
    return rules[0] if rules else None


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]


class Sent(TypedDict):
    """What a derived request probe sends, and through which proxy (the fields every request probe shares)."""

    via: str
    host: str | None
    path: str
    headers: dict[str, str]


@dataclass
class Derived:
    probes: list[Probe]
    skipped: list[str]  # rules no request could be built for, with why


def _satisfy(m: StringMatch | None, default: str) -> str | None:
    if m is None:
        return default
    if m.exact is not None:
        return m.exact
    if m.prefix is not None:
        return m.prefix
    return None  # regex: not derived


def _request_for(match: HTTPMatchRequest) -> Request | None:
    if match.method or match.authority or match.query_params or match.without_headers or match.source_labels:
        return None
    path = _satisfy(match.uri, "/")
    headers = {}
    for name, m in match.headers.items():
        value = _satisfy(m, "")
        if value is None:
            return None
        headers[name] = value
    return None if path is None else Request(path, headers)


def _string_matches(m: StringMatch | None, value: str | None) -> bool:
    if m is None:
        return True
    if value is None:
        return False
    if m.exact is not None:
        return value == m.exact
    if m.prefix is not None:
        return value.startswith(m.prefix)
    return True  # a regex might match: treat as shadowing, conservatively


def _could_match(match: HTTPMatchRequest, req: Request) -> bool:
    return _string_matches(match.uri, req.path) and all(
        _string_matches(m, req.headers.get(h)) for h, m in match.headers.items()
    )


def _requests(vs: VirtualService, index: int) -> Request | None:
    """A request rule `index` serves, and no earlier rule would take."""
    rule = vs.http[index]
    candidates = [_request_for(m) for m in rule.match] if rule.match else [Request("/", {})]
    for req in candidates:
        if req is None:
            continue
        earlier = vs.http[:index]
        if not any((not r.match) or any(_could_match(m, req) for m in r.match) for r in earlier):
            return req
    return None


def _versions(config: MeshConfig, host: str, namespace: str) -> dict[str, str]:
    """subset -> the `version` label it selects (what the sample app reports)."""
    dr = rule_for(config, host, namespace)
    return {s.name: s.labels["version"] for s in (dr.subsets if dr else []) if "version" in s.labels}


def _weights(config: MeshConfig, rule: HTTPRoute, namespace: str) -> dict[str, float] | None:
    hosts = {resolve_host(d.destination.host, namespace) for d in rule.route}
    if len(rule.route) < 2 or len(hosts) != 1:
        return None
    versions = _versions(config, rule.route[0].destination.host, namespace)
    weights: dict[str, float] = {}
    for d in rule.route:
        version = versions.get(d.destination.subset or "")
        if version is None:
            return None
        weights[version] = weights.get(version, 0.0) + float(d.weight or 0)
    return weights if sum(weights.values()) > 0 else None


def _principal(svc: Service) -> str:
    return svc.identity.removeprefix("spiffe://")


def _allowed(config: MeshConfig, caller: Service, target: Service) -> bool:
    """Does any ALLOW policy selecting `target` leave `caller` out? (principal-only rules; else assume allowed)."""
    for policy in _policies_for(config, target):
        if policy.action != "ALLOW":
            continue
        principals = {p for r in policy.rules for f in r.from_ for p in f.source.principals}
        if policy.rules and principals and _principal(caller) not in principals:
            return False
        if not policy.rules:
            return False  # an ALLOW policy with no rules denies everything
    return True


def _policies_for(config: MeshConfig, target: Service) -> list[AuthorizationPolicy]:
    labels = {"app": target.name}
    out = []
    for p in config.authorization_policies:
        if p.namespace not in (target.namespace, "istio-system"):
            continue
        selector = p.selector.match_labels if p.selector else {}
        if all(labels.get(k) == v for k, v in selector.items()):
            out.append(p)
    return out


def _caller_for(config: MeshConfig, target: Service | None) -> Service | None:
    for svc in config.services:
        if target is not None and svc.fqdn == target.fqdn:
            continue
        if target is None or _allowed(config, svc, target):
            return svc
    return None


def _via(vs: VirtualService, config: MeshConfig) -> tuple[str, str | None, Service | None] | None:
    """Where to send requests for this VirtualService: ("ingress", host, None) or ("pod:svc", "host:port", target)."""
    if vs.gateways and "mesh" not in vs.gateways:
        host = next((h for h in vs.hosts if "*" not in h), None)
        return ("ingress", host, None)
    target = service_for(config, vs.hosts[0], vs.namespace)
    if target is None:
        return None
    caller = _caller_for(config, target)
    if caller is None:
        return None
    return (f"pod:{caller.name}", f"{vs.hosts[0]}:{target.ports[0].number}", target)


def derive(config: MeshConfig) -> Derived:
    out = Derived([], [])
    for vs in config.virtual_services:
        _from_virtual_service(config, vs, out)
    _from_mtls(config, out)
    _from_authorization(config, out)
    return out


def _from_virtual_service(config: MeshConfig, vs: VirtualService, out: Derived) -> None:
    via = _via(vs, config)
    ref = f"VirtualService {vs.namespace}/{vs.name}"
    if via is None:
        out.skipped.append(f"{ref}: no caller can reach {vs.hosts[0]} (no service, or every caller denied)")
        return
    where, host, _ = via
    for i, rule in enumerate(vs.http):
        if rule.redirect is not None:
            continue
        req = _requests(vs, i)
        name = f"{ref} http[{i}]"
        if req is None:
            out.skipped.append(f"{name}: no request reaches this rule without regex or a shadowing rule")
            continue
        sent = Sent(via=where, host=host, path=req.path, headers=req.headers)
        abort = rule.fault.abort if rule.fault else None
        if abort is not None and abort.http_status is not None:
            pct = abort.percentage.value if abort.percentage else 100.0
            out.probes.append(
                FractionProbe(
                    name=f"{name} aborts {pct:g}% with {abort.http_status}",
                    status=abort.http_status,
                    fraction=pct / 100,
                    **sent,
                )
            )
            continue
        if rule.fault is not None:
            continue  # delays: timing is asserted by the e2e suite, not by every reconcile
        weights = _weights(config, rule, vs.namespace)
        if weights is not None:
            split = ", ".join(f"{k} {v:g}" for k, v in weights.items())
            out.probes.append(SplitProbe(name=f"{name} splits {split}", weights=weights, **sent))
        elif where == "ingress":
            out.probes.append(StatusProbe(name=f"{name} answers {req.path}", **sent))


def _strict_scope(config: MeshConfig) -> list[Service]:
    scoped: list[Service] = []
    for pa in config.peer_authentications:
        if not pa.mtls or pa.mtls.mode != "STRICT" or pa.selector:
            continue  # workload-scoped STRICT: left to declared probes (port-level modes make derivation guesswork)
        scoped += [s for s in config.services if pa.namespace in ("istio-system", s.namespace)]
    return list({s.fqdn: s for s in scoped}.values())


def _from_mtls(config: MeshConfig, out: Derived) -> None:
    for svc in _strict_scope(config):
        out.probes.append(
            PlaintextRefusedProbe(name=f"STRICT mTLS: {svc.name} refuses plaintext", service=svc.name, via="plaintext")
        )


def _from_authorization(config: MeshConfig, out: Derived) -> None:
    for target in config.services:
        if not any(p.action == "ALLOW" for p in _policies_for(config, target)):
            continue
        denied = next((s for s in config.services if s.fqdn != target.fqdn and not _allowed(config, s, target)), None)
        if denied is None:
            continue
        out.probes.append(
            DeniedProbe(
                name=f"AuthorizationPolicy: {denied.name} -> {target.name} denied",
                via=f"pod:{denied.name}",
                caller=denied.name,
                url=f"http://{target.name}:{target.ports[0].number}/",
            )
        )
