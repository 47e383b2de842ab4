"""Incremental translation: the memo of pieces (per service clusters, endpoints, virtual hosts, combined types)
kept from push to push, and the keys that say when a piece may be reused.

A key is the content of everything a piece reads; while it is unchanged the previous push's piece (and its
serialized bytes) is reused, so a one-route change re-translates one virtual host, not the mesh. The push context
(`context.py`) only indexes config; this module alone remembers.

Content digests of config objects are themselves carried from push to push, keyed by object identity
(`Fingerprints`): an object handed to a push is a snapshot (as in Istio's config store, a change is a new object
with a new resourceVersion), so an object seen before is not serialized again. Measured at 1,000 services: hashing
the ~3,000 objects of every push cost 25-35 ms of a ~100 ms one-route translation; carried, ~1 ms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel

from mesh.controlplane.translate.context import PushContext, ServiceView
from mesh.runtime import Proxy

T = TypeVar("T")
Memo = dict[Hashable, Any]
FINGERPRINTS = ("fingerprints",)  # the memo's entry for the digests carried across pushes
WORLD = ("world",)  # the memo's entry for the last world digest and the objects it hashed


class Fingerprints:
    """Content digests by object identity, kept across pushes. Holding the object keeps its id from being reused by
    another object; a new object (any edit through the API builds one) gets a new entry."""

    def __init__(self, previous: Fingerprints | None = None) -> None:
        self._previous = previous._seen if previous is not None else {}
        self._seen: dict[int, tuple[BaseModel, str]] = {}

    def digest(self, obj: BaseModel) -> str:
        key = id(obj)
        hit = self._seen.get(key)
        if hit is None:
            old = self._previous.get(key)
            hit = old if old is not None and old[0] is obj else (obj, _content_digest(obj))
            self._seen[key] = hit
        return hit[1]


def _content_digest(obj: BaseModel) -> str:
    return hashlib.blake2b(obj.__pydantic_serializer__.to_json(obj), digest_size=8).hexdigest()


class PushCache:
    """One push's view of the memo: `cached` reuses across pushes, `once` shares within this push only."""

    def __init__(self, push: PushContext, previous: Memo | None = None) -> None:
        self.push = push
        self._memo: Memo = previous if previous is not None else {}  # extended in place; `kept()` prunes it
        self._used: set[Hashable] = {FINGERPRINTS}
        self._once: dict[Hashable, Any] = {}
        self._fingerprints = self._memo[FINGERPRINTS] = Fingerprints(self._memo.get(FINGERPRINTS))

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

    def kept(self, prune: bool = True) -> Memo:
        """The memo for the next push: what this push used, nothing it no longer needs (`prune`), or everything
        (a push that kept some proxies' snapshots did not use their pieces, yet they may be needed again)."""
        if not prune:
            return self._memo
        return {k: self._memo[k] for k in self._used}

    # --- keys ----------------------------------------------------------------------------------------

    def digest(self, obj: BaseModel | None) -> str:
        """Content digest of a config object (computed once per object, carried across pushes)."""
        if obj is None:
            return "-"
        return self._fingerprints.digest(obj)

    @cached_property
    def world_digest(self) -> str:
        """Everything a route may read besides its own VirtualService: services and DestinationRules."""
        entries = [r for r in self.push.config.resources if r.kind in ("ServiceEntry", "WorkloadEntry")]
        objects = [*self.push.config.services, *self.push.destination_rules, *entries]
        last = self._memo.get(WORLD)
        self._used.add(WORLD)
        if (
            last is not None
            and len(last[0]) == len(objects)
            and all(a is b for a, b in zip(last[0], objects, strict=True))
        ):
            return str(last[1])  # the same objects as last push (a VirtualService change): not hashed again
        h = hashlib.blake2b(digest_size=8)
        for obj in objects:
            h.update(self.digest(obj).encode())
        self._memo[WORLD] = (objects, h.hexdigest())
        return h.hexdigest()

    def clusters_key(self, view: ServiceView, ns: str) -> Hashable:
        """Everything a service's outbound clusters depend on, by content."""
        push = self.push
        dr = push.destination_rule(view.fqdn, ns)
        modes = tuple(push.mtls_mode(p, port.number) for p in view.pods for port in view.service.ports)
        mesh = (push.options.h2_upgrade_policy, push.options.interception)  # protocol and cluster type
        return ("cds", view.fqdn, ns, self.digest(view.service), self.digest(dr), modes, mesh)

    def endpoints_key(self, view: ServiceView, ns: str) -> Hashable:
        """Everything a service's load assignments depend on, by content."""
        pods = tuple((p.name, p.ip, p.healthy, tuple(sorted(p.labels.items()))) for p in view.pods)
        dr = self.push.destination_rule(view.fqdn, ns)
        return ("eds", view.fqdn, ns, self.digest(view.service), self.digest(dr), pods)

    def sidecar_routes_key(self, proxy: Proxy) -> Hashable:
        """Sidecars with equal keys get identical routes: per namespace and Sidecar scope, unless a rule matches the
        caller's labels."""
        labels = tuple(sorted(proxy.labels.items())) if self.push.uses_source_labels else ()
        return (proxy.namespace, labels, self.push.proxy_scope(proxy).key)

    def vhost_keys(self, proxy: Proxy) -> list[tuple[Hashable, ServiceView, int]]:
        """One key per sidecar virtual host (service port in the proxy's scope): its inputs' content. The Sidecar
        scope is not among them (it only picks which virtual hosts and which VirtualService): proxies whose
        scopes overlap share their common virtual hosts."""
        labels = tuple(sorted(proxy.labels.items())) if self.push.uses_source_labels else ()
        base = (proxy.namespace, labels)
        scope = self.push.proxy_scope(proxy)
        out: list[tuple[Hashable, ServiceView, int]] = []
        for fqdn, ports in scope.vhost_ports.items():
            view = self.push.services[fqdn]
            vs = self.digest(scope.virtual_services.get(fqdn))
            for port in ports:
                out.append((("vh", fqdn, port, base, vs, self.world_digest), view, port))
        return out
