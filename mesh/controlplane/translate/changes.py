"""What changed since the last push, and which proxies it reaches (Istio's ConfigsUpdated and ProxyDependentOnConfig:
pilot/pkg/xds/proxy_dependencies.go, pilot/pkg/model/sidecar.go).

Config objects are snapshots (an edit is a new object, as in Istio's config store), so a change is found by identity:
a new object with the same content counts as changed here (the memo then reuses its pieces). Two kinds get a
dependency rule, the ones a routing change touches: a VirtualService reaches the proxies whose scope holds a host it
claims (before or after the change), a DestinationRule the proxies whose scope holds its host. Everything else
(services, pods, options, Sidecars, policies, gateways, entries, rate limits) translates every proxy, as a full push
did before; the content-keyed memo (`cache.py`) still reuses every unchanged piece there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule
from mesh.istio import is_wildcard, rule_host, tls_settings
from mesh.istio.routing import claimed_hosts, claims
from mesh.runtime import Pod, Proxy

Pair = tuple[Any, Any]  # (before, after); None on one side: added or removed
TRACKED = ("VirtualService", "DestinationRule")  # the kinds whose dependents are told apart
ENTRY_KINDS = ("ServiceEntry", "WorkloadEntry")  # entry hosts read every VirtualService and DestinationRule
MAX_TRACKED = 64  # past this many changed objects, rebuilding the indexes is cheaper than patching them


@dataclass(frozen=True)
class Inputs:
    """Everything a push translates besides the memo: kept with the snapshots it produced."""

    config: MeshConfig
    pods: Sequence[Pod]
    proxies: Sequence[Proxy]
    options: object
    services: tuple[object, ...] = field(default=(), init=False)  # the lists' elements as they were at the push:
    resources: tuple[object, ...] = field(default=(), init=False)  # a list edited in place later is still told apart

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(self.config.services))
        object.__setattr__(self, "resources", tuple(self.config.resources))


@dataclass(frozen=True)
class ConfigChanges:
    """The changed VirtualServices and DestinationRules (before, after), or `everything`: something without a
    dependency rule changed (or there is no previous push), so every proxy is translated."""

    virtual_services: tuple[Pair, ...] = ()
    destination_rules: tuple[Pair, ...] = ()
    everything: bool = False
    hosts: frozenset[str] = field(default=frozenset(), init=False)  # what the changes claim, resolved

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        for before, after in self.virtual_services:
            hosts |= {h for vs in (before, after) if vs is not None for h in claimed_hosts(vs)}
        for before, after in self.destination_rules:
            hosts |= {rule_host(dr) for dr in (before, after) if dr is not None}
        object.__setattr__(self, "hosts", frozenset(hosts))

    @property
    def none(self) -> bool:
        return not self.everything and not self.virtual_services and not self.destination_rules

    def reaches(self, fqdns: dict[str, Any]) -> bool:
        """Whether a change claims one of `fqdns` (a scope's services)."""
        if any(is_wildcard(h) for h in self.hosts):
            return any(claims(self.hosts, f) for f in fqdns)
        return any(h in fqdns for h in self.hosts)


EVERYTHING = ConfigChanges(everything=True)


def config_changes(before: Inputs | None, after: Inputs) -> ConfigChanges:
    """The changes from `before` to `after` (EVERYTHING without a previous push)."""
    if before is None or before.options != after.options:
        return EVERYTHING
    if not _same(before.pods, after.pods) or not _same(before.proxies, after.proxies):
        return EVERYTHING  # endpoints, health, labels: every proxy (Istio: an EDS push; ours is full)
    if not _same(before.services, after.services):
        return EVERYTHING
    if any(r.kind in ENTRY_KINDS for r in after.config.resources):
        return EVERYTHING
    pairs = _changed(before.resources, after.resources)
    if pairs is None or any(_kind(p) not in TRACKED for p in pairs) or len(pairs) > MAX_TRACKED:
        return EVERYTHING
    rules = tuple(p for p in pairs if _kind(p) == "DestinationRule")
    if any(_originates_tls(dr) for p in rules for dr in p if dr is not None):
        return EVERYTHING  # its credentialName reaches every proxy's SDS
    return ConfigChanges(tuple(p for p in pairs if _kind(p) == "VirtualService"), rules)


def _kind(pair: Pair) -> str:
    return str((pair[0] or pair[1]).kind)


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _changed(before: Sequence[Any], after: Sequence[Any]) -> list[Pair] | None:
    """The (before, after) pairs of objects that are not the same object, matched by key; None if keys repeat."""
    if len(before) == len(after):  # the usual edit: the same objects in the same order but one or a few
        differ = [(x, y) for x, y in zip(before, after, strict=True) if x is not y]
        if all(x.key == y.key for x, y in differ):
            return differ
    old = {r.key: r for r in before}
    new = {r.key: r for r in after}
    if len(old) != len(before) or len(new) != len(after):
        return None
    pairs: list[Pair] = [(old.get(k), r) for k, r in new.items() if old.get(k) is not r]
    return pairs + [(r, None) for k, r in old.items() if k not in new]


def _originates_tls(dr: DestinationRule) -> bool:
    return any(tls.credential_name for tls in tls_settings(dr))


__all__ = ["EVERYTHING", "ConfigChanges", "Inputs", "config_changes"]
