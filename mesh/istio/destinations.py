"""Which DestinationRule applies to a host for a client: the client's namespace first, then the others."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mesh.api.networking import ClientTLSSettings, DestinationRule
from mesh.istio.hosts import resolve_host
from mesh.istio.visibility import export_scope


def rule_host(dr: DestinationRule) -> str:
    """The host a rule is for, resolved in its own namespace."""
    return resolve_host(dr.host, dr.namespace)


def tls_settings(dr: DestinationRule) -> Iterator[ClientTLSSettings]:
    """Every upstream TLS setting a rule holds: its traffic policy's and each port's, then each subset's."""
    for tp in [dr.traffic_policy, *(s.traffic_policy for s in dr.subsets)]:
        if tp is not None:
            yield from (tls for tls in [tp.tls, *(pl.tls for pl in tp.port_level_settings)] if tls is not None)


def visible_to(dr: DestinationRule, client_namespace: str) -> bool:
    """exportTo: a rule's own namespace always sees it (Istio keeps namespace-local rules); others see it when its
    exportTo is unset, `*`, or names them (`.` is its own namespace)."""
    scope = export_scope(dr.export_to, dr.namespace)
    return dr.namespace == client_namespace or scope is None or client_namespace in scope


def pick_destination_rule(rules: Iterable[DestinationRule], client_namespace: str) -> DestinationRule | None:
    """Among the rules for one host that the client's namespace sees: its own namespace's, else the first by
    (namespace, name)."""
    ordered = sorted(
        (d for d in rules if visible_to(d, client_namespace)),
        key=lambda d: (d.namespace != client_namespace, d.namespace, d.name),
    )
    return ordered[0] if ordered else None


def destination_rule_for(rules: Iterable[DestinationRule], host: str, client_namespace: str) -> DestinationRule | None:
    """The rule a client in `client_namespace` gets for `host` (a short name resolves in the client's namespace)."""
    fqdn = resolve_host(host, client_namespace)
    return pick_destination_rule((d for d in rules if rule_host(d) == fqdn), client_namespace)
