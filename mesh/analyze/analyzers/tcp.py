"""MSH0008: AuthorizationPolicy rules with HTTP-only fields that apply to TCP ports (Istio cannot check them on a
connection: an ALLOW rule then matches nothing, a DENY rule drops them and denies more)."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.security import AuthorizationPolicy, Rule
from mesh.api.workloads import Service
from mesh.istio import ROOT_NAMESPACE
from mesh.istio.protocol import http_only_fields, is_http_port, port_protocol


def _selects(ap: AuthorizationPolicy, svc: Service) -> bool:
    labels = ap.selector.match_labels if ap.selector else {}
    if ap.namespace != ROOT_NAMESPACE and ap.namespace != svc.namespace:
        return False
    return any(labels.items() <= svc.pod_labels(v).items() for v in svc.versions)


def _rule_ports(rule: Rule) -> set[int] | None:
    """The ports a rule names (None: any)."""
    named = {int(p) for t in rule.to for p in t.operation.ports if p.isdigit()}
    return named or None


@analyzer("authorization.tcp-http-fields", "HTTP-only authorization fields do not meet TCP ports", ("MSH0008",))
def http_fields_on_tcp(ctx: Context) -> Iterator[Finding]:
    for ap in ctx.config.authorization_policies:
        for i, rule in enumerate(ap.rules):
            fields = http_only_fields(rule)
            if not fields:
                continue
            ports = _rule_ports(rule)
            hit = [
                f"{svc.name}:{p.number} ({port_protocol(p)})"
                for svc in ctx.config.services
                if _selects(ap, svc)
                for p in svc.ports
                if not is_http_port(p) and (ports is None or p.number in ports)
            ]
            if not hit:
                continue
            effect = (
                "this DENY rule ignores them there and denies more connections"
                if ap.action == "DENY"
                else f"this {ap.action} rule matches no connection there"
            )
            yield finding(
                "MSH0008",
                path=f"spec.rules[{i}]",
                fields=", ".join(fields),
                ports=", ".join(hit),
                effect=effect,
                **at(ap),
            )
