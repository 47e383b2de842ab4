"""The Pilot's transactional push through the snapshot cache, with no Envoy: fake proxies ACK or NACK on the cache."""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Callable

import pytest

from mesh.api import DestinationRule, MeshConfig, Service, Subset, Version
from mesh.api import helpers as h
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot, _no_cycle_collection
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.cache import NodeStatus, SnapshotCache
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.errors import PushRejected, PushTimedOut
from mesh.runtime import Registry, pods_for

ENVOY_ERROR = "Proto constraint validation failed (RouteConfigurationValidationError.VirtualHosts[0]: bad weight)"


class FakeProxy:
    """Stands in for one Envoy's ADS stream: answers every snapshot the cache is given with an ACK of each type,
    or a NACK of the types `reject` names (recorded exactly as the ADS server records them)."""

    def __init__(self, cache: SnapshotCache, node_id: str, reject: Callable[[Snapshot], set[str]]) -> None:
        self.cache, self.node_id, self.reject = cache, node_id, reject
        self.received: list[Snapshot] = []
        self.stopped = False  # a stopped Envoy: connected, answers nothing
        cache.record(node_id, _connected)
        cache.watch(node_id, self._on_snapshot)

    def _on_snapshot(self) -> None:
        snap = self.cache.get_snapshot(self.node_id)
        assert snap is not None
        self.received.append(snap)
        if self.stopped:
            return
        rejected = self.reject(snap)
        for type_url in snap.by_type:
            self.cache.record(self.node_id, _answer(type_url, snap.version(type_url), type_url in rejected))


def _connected(ns: NodeStatus) -> None:
    ns.connected, ns.streams = True, 1


def _answer(type_url: str, version: str, nack: bool) -> Callable[[NodeStatus], None]:
    def update(ns: NodeStatus) -> None:
        ts = ns.type(type_url)
        ts.sent = version
        if nack:
            ts.nacked, ts.error = version, ENVOY_ERROR
        else:
            ts.acked, ts.nacked, ts.error = version, "", ""

    return update


def _config(weight: int) -> MeshConfig:
    subsets = [Subset(name="v1", labels={"version": "v1"}), Subset(name="v2", labels={"version": "v2"})]
    return MeshConfig().add(
        Service(name="productpage", versions=[Version(name="v1", replicas=1, command=["x"])]),
        Service(
            name="reviews",
            versions=[Version(name="v1", replicas=1, command=["x"]), Version(name="v2", replicas=1, command=["x"])],
        ),
        DestinationRule(name="reviews", host="reviews", subsets=subsets),
        h.canary("reviews", stable="v1", candidate="v2", weight=weight),
    )


@pytest.fixture
def world() -> tuple[Pilot, SnapshotCache, Registry]:
    counter = itertools.count(1)
    registry = Registry()
    for svc in _config(0).services:
        for pod in pods_for(svc, lambda: (f"127.98.{next(counter)}.1", "127.98.0.2")):
            registry.add_pod(pod)
    cache = SnapshotCache()
    return Pilot(registry, CertificateAuthority(), cache), cache, registry


def test_a_push_every_proxy_acks_is_applied(world: tuple[Pilot, SnapshotCache, Registry]) -> None:
    pilot, cache, registry = world
    proxies = [FakeProxy(cache, p.id, lambda _: set()) for p in registry.proxies]
    config = _config(10)
    result = pilot.push(config, wait=5.0)
    assert result.synced and pilot.config is config and pilot.revision == 1
    assert sorted(result.changed) == sorted(p.node_id for p in proxies)
    assert all(len(p.received) == 1 for p in proxies)


def test_one_nack_rolls_every_proxy_back_and_keeps_the_config(world: tuple[Pilot, SnapshotCache, Registry]) -> None:
    pilot, cache, registry = world
    good = _config(10)
    first_routes: dict[str, str] = {}

    def reject_new_routes(snap: Snapshot) -> set[str]:
        """The reviews-v2 sidecar accepts the first route table it gets and refuses any other."""
        version = first_routes.setdefault("v", snap.version(rt.ROUTE))
        return {rt.ROUTE} if snap.version(rt.ROUTE) != version else set()

    nacker_id = next(p.id for p in registry.proxies if p.name == "reviews-v2-0")
    proxies = {
        p.id: FakeProxy(cache, p.id, reject_new_routes if p.id == nacker_id else lambda _: set())
        for p in registry.proxies
    }
    pilot.push(good, wait=5.0)
    applied = {node: snap for node in proxies if (snap := cache.get_snapshot(node)) is not None}
    assert applied.keys() == proxies.keys()

    with pytest.raises(PushRejected) as rejected:
        pilot.push(_config(50), wait=5.0)

    assert set(rejected.value.rejections) == {nacker_id}
    assert ENVOY_ERROR in rejected.value.rejections[nacker_id]
    assert pilot.config is good and pilot.revision == 1
    for node, proxy in proxies.items():
        assert cache.get_snapshot(node) is applied[node], node
        # every proxy saw the new snapshot and then the previous one again: rolled back, not left half-applied
        old, new = applied[node].version_key, proxy.received[1].version_key
        assert [s.version_key for s in proxy.received] == [old, new, old] and new != old
        assert cache.sync_state(node).state == "SYNCED"


def test_without_rollback_the_rejected_snapshot_stays(world: tuple[Pilot, SnapshotCache, Registry]) -> None:
    pilot, cache, registry = world
    nacker_id = registry.proxies[0].id
    for p in registry.proxies:
        FakeProxy(cache, p.id, (lambda s: {rt.ROUTE}) if p.id == nacker_id else (lambda _: set()))
    result = pilot.push(_config(10), wait=5.0, rollback=False)
    assert result.results[nacker_id].state == "NACK"
    assert result.results[nacker_id].errors == {rt.SHORT[rt.ROUTE]: ENVOY_ERROR}
    assert not result.synced and pilot.revision == 1


def test_a_push_a_proxy_never_answers_is_rolled_back_like_a_nack(world: tuple[Pilot, SnapshotCache, Registry]) -> None:
    """Item 9: one sidecar stopped (connected, silent): the push times out, every proxy that took it is given the
    previous config again, and the record (config, revision) is what runs."""
    pilot, cache, registry = world
    silent_id = registry.proxies[0].id
    proxies = {p.id: FakeProxy(cache, p.id, lambda _: set()) for p in registry.proxies}
    good = _config(10)
    pilot.push(good, wait=5.0)
    applied = {node: cache.get_snapshot(node) for node in proxies}
    proxies[silent_id].stopped = True
    with pytest.raises(PushTimedOut) as timed_out:
        pilot.push(_config(50), wait=0.5)
    assert set(timed_out.value.rejections) == {silent_id}
    assert timed_out.value.exit_code == 76
    assert pilot.config is good and pilot.revision == 1
    for node in proxies:
        assert cache.get_snapshot(node) is applied[node], node


class _Node:
    link: object = None


def test_cyclic_garbage_made_during_a_push_is_collected_not_frozen() -> None:
    """The collector is off for the whole process during a push: a cycle another thread drops meanwhile must be
    collected before the survivors are frozen (a frozen object is never collected)."""
    with _no_cycle_collection():
        node = _Node()
        node.link = node
        dropped = weakref.ref(node)
        del node
    assert dropped() is None
    assert gc.isenabled()


def test_a_push_that_raises_freezes_nothing() -> None:
    """A freeze moves every tracked object into the permanent generation (the count jumps); frozen objects freed by
    reference counting meanwhile may lower it."""
    frozen = gc.get_freeze_count()
    with pytest.raises(ValueError), _no_cycle_collection():
        raise ValueError("translation failed")
    assert gc.isenabled() and gc.get_freeze_count() <= frozen
