"""Snapshot: one proxy's complete config, immutable, versioned per type by content."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from mesh.controlplane.xds import resources as rt
from mesh.errors import InconsistentSnapshot

__all__ = ["InconsistentSnapshot", "Resources", "Snapshot"]


_TYPE_PREFIX = "type.googleapis.com/"


def _name(msg: Message) -> str:
    return str(getattr(msg, "cluster_name", "") or msg.name)


@dataclass(eq=False)
class Resources:
    """All resources of one type, by name, and a version that changes only when their content does.

    Parts shared by many proxies (outbound clusters, endpoints, routes) are built, hashed and packed once per push
    and combined with each proxy's own part, so a 50-proxy push does not serialize the same cluster 50 times.

    Mutable by design, and only in one way: the content (`version`, `parts`, the messages) is fixed once built, and
    the views derived from it (merged items, EDS names, packed Anys, wire bytes) are filled on first read.
    """

    _items: Mapping[str, Message] | None
    version: str
    parts: tuple[Resources, ...] = ()
    _packed: dict[str, any_pb2.Any] = field(default_factory=dict, repr=False)
    _eds: frozenset[str] | None = field(default=None, init=False, repr=False)
    _serialized: dict[frozenset[str] | None, bytes] = field(default_factory=dict, init=False, repr=False)
    _versions: dict[str, str] | None = field(default=None, init=False, repr=False)
    _delta: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    _leaves: dict[str, Resources] | None = field(default=None, init=False, repr=False)
    _delta_joined: dict[tuple[str, ...], bytes] = field(default_factory=dict, init=False, repr=False)

    @property
    def items(self) -> Mapping[str, Message]:
        """By name. For combined parts the merged mapping is built on first read (an unchanged type never is)."""
        if self._items is None:
            merged: dict[str, Message] = {}
            for p in self.parts:
                merged.update(p.items)
            self._items = MappingProxyType(merged)
        return self._items

    @classmethod
    def of(cls, messages: Iterable[Message]) -> Resources:
        items = {_name(m): m for m in messages}
        digest = hashlib.blake2b(digest_size=8)
        packed: dict[str, any_pb2.Any] = {}
        for name in sorted(items):
            msg = items[name]
            wire = msg.SerializeToString(deterministic=True)
            digest.update(name.encode())
            digest.update(wire)
            # The bytes just hashed are the Any's value: packing again would serialize the resource a second time.
            packed[name] = any_pb2.Any(type_url=_TYPE_PREFIX + msg.DESCRIPTOR.full_name, value=wire)
        return cls(MappingProxyType(items), digest.hexdigest(), _packed=packed)

    @classmethod
    def combine(cls, *parts: Resources) -> Resources:
        version = hashlib.blake2b("/".join(p.version for p in parts).encode(), digest_size=8).hexdigest()
        return cls(None, version, parts)

    def eds_clusters(self) -> frozenset[str]:
        """The EDS names these clusters ask for (computed once)."""
        cached = self._eds
        if cached is None:
            if self.parts:
                cached = frozenset().union(*(p.eds_clusters() for p in self.parts))
            else:
                from envoy.config.cluster.v3 import cluster_pb2

                cached = frozenset(  # Envoy asks EDS for the service name when one is set (sni-dnat clusters)
                    c.eds_cluster_config.service_name or n
                    for n, c in self.items.items()
                    if isinstance(c, cluster_pb2.Cluster) and c.type == cluster_pb2.Cluster.EDS
                )
            self._eds = cached
        return cached

    def wire(self, names: frozenset[str] | None = None) -> tuple[bytes, ...]:
        """The `resources` field of a DiscoveryResponse in pieces to concatenate (repeated fields concatenate on the
        wire): combined parts give their parts' pieces, each encoded once and shared by every snapshot holding the
        part, so a proxy's own combination (its inbound clusters on the mesh's 5,000 outbound ones) is never copied."""
        if names is None and self.parts:
            return tuple(b for p in self.parts for b in p.wire(None))
        return (self.serialized(names),)

    def serialized(self, names: frozenset[str] | None = None) -> bytes:
        """The `resources` field of a DiscoveryResponse (all, or only `names`), encoded once and reused (joined
        anew for combined parts: `wire`)."""
        cache = self._serialized
        if names is None and self.parts:
            return b"".join(self.wire(None))
        if names not in cache:
            packed = self.packed()
            chosen = sorted(packed) if names is None else sorted(n for n in names if n in packed)
            cache[names] = discovery_pb2.DiscoveryResponse(resources=[packed[n] for n in chosen]).SerializeToString()
        return cache[names]

    def versions(self) -> Mapping[str, str]:
        """Each resource's own version (a digest of its bytes), for delta xDS: a one-host change is one changed entry.
        Combined parts merge their parts' maps, so a part shared by every proxy is hashed once."""
        cached = self._versions
        if cached is None:
            cached = {}
            if self.parts:
                for p in self.parts:
                    cached.update(p.versions())
            else:
                for name, packed in self.packed().items():
                    cached[name] = hashlib.blake2b(packed.value, digest_size=8).hexdigest()
            self._versions = cached
        return cached

    def delta_resource(self, name: str) -> bytes:
        """One `resources` entry of a DeltaDiscoveryResponse (name, version, the Any), encoded once and shared by
        every stream that sends it: repeated fields concatenate on the wire."""
        if self.parts:
            return self._leaf(name).delta_resource(name)
        wire = self._delta.get(name)
        if wire is None:
            resource = discovery_pb2.Resource(name=name, version=self.versions()[name], resource=self.packed()[name])
            wire = self._delta[name] = discovery_pb2.DeltaDiscoveryResponse(resources=[resource]).SerializeToString()
        return wire

    def delta_resources(self, names: tuple[str, ...]) -> bytes:
        """The `resources` of a DeltaDiscoveryResponse carrying `names`. Streams that were in step are sent the same
        set (every host after a full change, the one changed host after a one-route change): joined once per set."""
        joined = self._delta_joined.get(names)
        if joined is None:
            joined = b"".join(self.delta_resource(n) for n in names)
            if len(self._delta_joined) < 8:  # a few sets recur; a stream far behind gets its own, not kept
                self._delta_joined[names] = joined
        return joined

    def _leaf(self, name: str) -> Resources:
        """The part holding `name` (later parts win, as in `items`), indexed once."""
        if self._leaves is None:
            leaves: dict[str, Resources] = {}
            for p in self.parts:
                if p.parts:
                    leaves.update({n: p._leaf(n) for n in p.versions()})
                else:
                    leaves.update(dict.fromkeys(p.versions(), p))
            self._leaves = leaves
        return self._leaves[name]

    def packed(self) -> Mapping[str, any_pb2.Any]:
        """Each resource as an Any: `of` packs while hashing; combined parts merge their parts' on first use."""
        if self.parts and not self._packed:
            for p in self.parts:
                self._packed.update(p.packed())
        return self._packed


@dataclass(frozen=True)
class Snapshot:
    by_type: Mapping[str, Resources] = field(default_factory=dict)

    @classmethod
    def build(cls, **kinds: Iterable[Message] | Resources) -> Snapshot:
        """`Snapshot.build(clusters=..., endpoints=..., listeners=..., routes=..., virtual_hosts=..., secrets=...)`."""
        urls = {
            "clusters": rt.CLUSTER,
            "endpoints": rt.ENDPOINT,
            "listeners": rt.LISTENER,
            "routes": rt.ROUTE,
            "virtual_hosts": rt.VIRTUAL_HOST,
            "secrets": rt.SECRET,
        }
        return cls(
            MappingProxyType({urls[k]: v if isinstance(v, Resources) else Resources.of(v) for k, v in kinds.items()})
        )

    def resources(self, type_url: str) -> Resources:
        return self.by_type.get(type_url) or Resources(MappingProxyType({}), "empty")

    def version(self, type_url: str) -> str:
        return self.resources(type_url).version

    @property
    def version_key(self) -> str:
        return ".".join(self.version(t)[:6] for t in rt.ORDER)

    def consistent(self) -> None:
        """Every EDS cluster has endpoints and every RDS name a route config (go-control-plane's Consistent())."""
        from envoy.config.listener.v3 import listener_pb2

        missing = self.resources(rt.CLUSTER).eds_clusters() - self.resources(rt.ENDPOINT).items.keys()
        if missing:
            raise InconsistentSnapshot(f"EDS clusters without endpoints: {sorted(missing)[:5]}")
        wanted = set()
        for lst in self.resources(rt.LISTENER).items.values():
            assert isinstance(lst, listener_pb2.Listener)
            wanted |= _rds_names(lst)
        missing_routes = wanted - set(self.resources(rt.ROUTE).items)
        if missing_routes:
            raise InconsistentSnapshot(f"listeners reference missing route configs: {sorted(missing_routes)[:5]}")


def _rds_names(listener: Message) -> set[str]:
    out: set[str] = set()
    for chain in listener.filter_chains:
        for f in chain.filters:
            if f.name == "envoy.filters.network.http_connection_manager":
                out |= _hcm_rds_names(f.typed_config.value)
    return out


@functools.lru_cache(maxsize=4096)
def _hcm_rds_names(hcm_bytes: bytes) -> frozenset[str]:
    """Unpacking an HttpConnectionManager is the costly part; the same chain recurs on every proxy and push."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

    m = hcm.HttpConnectionManager.FromString(hcm_bytes)
    return frozenset([m.rds.route_config_name]) if m.HasField("rds") else frozenset()
