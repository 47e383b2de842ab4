"""Incremental translation: the memo of pieces (per service clusters, endpoints, virtual hosts, combined types)
kept from push to push, and the keys that say when a piece may be reused.

A key is the content of everything a piece reads; while it is unchanged the previous push's piece (and its
serialized bytes) is reused, so a one-route change re-translates one virtual host, not the mesh. The push context
(`context.py`) only indexes config; this module alone remembers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel

from mesh.controlplane.translate.context import PushContext, ServiceView, http_ports
from mesh.runtime import Proxy

T = TypeVar("T")
Memo = dict[Hashable, Any]


class PushCache:
    """One push's view of the memo: `cached` reuses across pushes, `once` shares within this push only."""

    def __init__(self, push: PushContext, previous: Memo | None = None) -> None:
        self.push = push
        self._memo: Memo = previous if previous is not None else {}  # extended in place; `kept()` prunes it
        self._used: set[Hashable] = set()
        self._once: dict[Hashable, Any] = {}
        self._digests: dict[int, str] = {}

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """Remembered across pushes while `key` (the inputs' content) stays the same."""
        self._used.add(key)
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]  # type: ignore[no-any-return]

    def once(self, key: Hashable, make: Callable[[], T]) -> T:
        """Computed once per push (not remembered across pushes)."""
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]  # type: ignore[no-any-return]

    def kept(self) -> Memo:
        """The memo for the next push: what this push used, nothing it no longer needs."""
        return {k: self._memo[k] for k in self._used}

    # --- keys ----------------------------------------------------------------------------------------

    def digest(self, obj: BaseModel | None) -> str:
        """Content digest of a config object (computed once per push)."""
        if obj is None:
            return "-"
        d = self._digests.get(id(obj))
        if d is None:
            d = self._digests[id(obj)] = hashlib.blake2b(
                obj.__pydantic_serializer__.to_json(obj), digest_size=8
            ).hexdigest()
        return d

    @cached_property
    def world_digest(self) -> str:
        """Everything a route may read besides its own VirtualService: services and DestinationRules."""
        h = hashlib.blake2b(digest_size=8)
        entries = [r for r in self.push.config.resources if r.kind in ("ServiceEntry", "WorkloadEntry")]
        for obj in [*self.push.config.services, *self.push.destination_rules, *entries]:
            h.update(self.digest(obj).encode())
        return h.hexdigest()

    def clusters_key(self, view: ServiceView, ns: str) -> Hashable:
        """Everything a service's outbound clusters depend on, by content."""
        push = self.push
        dr = push.destination_rule(view.fqdn, ns)
        modes = tuple(push.mtls_mode(p, port.number) for p in view.pods for port in view.service.ports)
        return ("cds", view.fqdn, ns, self.digest(view.service), self.digest(dr), modes)

    def endpoints_key(self, view: ServiceView, ns: str) -> Hashable:
        """Everything a service's load assignments depend on, by content."""
        pods = tuple((p.name, p.ip, p.healthy, tuple(sorted(p.labels.items()))) for p in view.pods)
        dr = self.push.destination_rule(view.fqdn, ns)
        return ("eds", view.fqdn, ns, self.digest(view.service), self.digest(dr), pods)

    def sidecar_routes_key(self, proxy: Proxy) -> Hashable:
        """Sidecars with equal keys get identical routes: per namespace, unless a rule matches the caller's labels."""
        labels = tuple(sorted(proxy.labels.items())) if self.push.uses_source_labels else ()
        return (proxy.namespace, labels)

    def vhost_keys(self, proxy: Proxy) -> list[tuple[Hashable, ServiceView, int]]:
        """One key per sidecar virtual host (service port): its inputs' content."""
        base = self.sidecar_routes_key(proxy)
        out: list[tuple[Hashable, ServiceView, int]] = []
        for view in self.push.services.values():
            vss = tuple(self.digest(vs) for vs in self.push.mesh_virtual_services.get(view.fqdn, [])[:1])
            for port in http_ports(view.service):
                out.append((("vh", view.fqdn, port.number, base, vss, self.world_digest), view, port.number))
        return out
