"""The translation memo carried across pushes: a changed object always changes its key (never a stale piece), an
unchanged one is not serialized again, and a memo-built snapshot equals one built from nothing."""

from __future__ import annotations

import itertools

import pytest

from mesh.api import MeshConfig, VirtualService
from mesh.api import helpers as h
from mesh.compile import build_policies
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot
from mesh.controlplane.translate import cache as memo
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.runtime import Registry, pods_for


def _pilot(config: MeshConfig) -> Pilot:
    counter = itertools.count(1)

    def ips() -> tuple[str, str]:
        k = next(counter)
        return f"127.99.{k}.1", f"127.99.{k}.2"

    registry = Registry()
    for svc in config.services:
        for pod in pods_for(svc, ips):
            registry.add_pod(pod)
    return Pilot(registry, CertificateAuthority())


def _replace(config: MeshConfig, *objects: VirtualService) -> MeshConfig:
    keys = {o.key for o in objects}
    return MeshConfig(config.services, [r for r in config.resources if r.key not in keys] + list(objects))


def _reviews(weights: dict[str, int]) -> VirtualService:
    return VirtualService(name="reviews", hosts=["reviews"], http=[h.split("reviews", weights)])


def _wire(snap: Snapshot) -> dict[str, dict[str, bytes]]:
    """Every type but SDS (each Pilot here has its own CA)."""
    return {
        t: {n: m.SerializeToString(deterministic=True) for n, m in snap.resources(t).items.items()}
        for t in rt.ORDER
        if t != rt.SECRET
    }


@pytest.fixture
def base() -> MeshConfig:
    return build_policies("e2e")


def test_a_changed_object_is_never_served_from_the_memo(base: MeshConfig) -> None:
    """Every push with the carried memo equals a translation from nothing: if a key missed an input, an old
    virtual host (50/50) would be served after the change (100/0) and the wire bytes would differ."""
    pilot = _pilot(base)
    sequence = [
        _replace(base, _reviews({"v1": 50, "v3": 50})),
        _replace(base, _reviews({"v1": 100, "v3": 0})),
        _replace(base, _reviews({"v1": 100, "v3": 0})),  # same content, new object
        _replace(base, _reviews({"v1": 0, "v3": 100})),
    ]
    for config in sequence:
        carried, _ = pilot.snapshots(config)
        fresh, _ = _pilot(config).snapshots(config)
        assert carried.keys() == fresh.keys()
        for node, snap in carried.items():
            assert _wire(snap) == _wire(fresh[node]), node


def test_an_object_seen_before_is_not_serialized_again(base: MeshConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    pilot = _pilot(base)
    pilot.snapshots(base)
    digested: list[object] = []
    real = memo._content_digest

    def counting(obj: object) -> str:
        digested.append(obj)
        return real(obj)  # type: ignore[arg-type]

    monkeypatch.setattr(memo, "_content_digest", counting)
    pilot.snapshots(base)
    assert digested == []
    changed = _reviews({"v1": 10, "v3": 90})
    pilot.snapshots(_replace(base, changed))
    assert [id(o) for o in digested] == [id(changed)]  # only the new object


def test_equal_content_in_a_new_object_reuses_the_pieces(base: MeshConfig) -> None:
    pilot = _pilot(base)
    first, _ = pilot.snapshots(_replace(base, _reviews({"v1": 50, "v3": 50})))
    again, _ = pilot.snapshots(_replace(base, _reviews({"v1": 50, "v3": 50})))
    node = next(iter(first))
    assert again[node].resources(rt.ROUTE) is first[node].resources(rt.ROUTE)
