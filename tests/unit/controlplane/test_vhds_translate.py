"""Sidecar route tables over VHDS: the same virtual hosts as over RDS, moved into `<table>/<host>` resources, in
both interception modes; `auto` only for large tables; gateways never."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from mesh.api import MeshConfig, VirtualService, helpers
from mesh.controlplane.translate import MeshOptions, PushContext, vhds
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.snapshot import Snapshot

from .conftest import World


def _with(world: World, **options: str) -> World:
    world.push = PushContext(world.config, world.pods, MeshOptions(**options))  # type: ignore[arg-type]
    return world


def _tables(snap: Snapshot) -> dict[str, route_pb2.RouteConfiguration]:
    return {n: m for n, m in snap.resources(rt.ROUTE).items.items() if isinstance(m, route_pb2.RouteConfiguration)}


def _hosts(snap: Snapshot) -> dict[str, rc.VirtualHost]:
    return {n: m for n, m in snap.resources(rt.VIRTUAL_HOST).items.items() if isinstance(m, rc.VirtualHost)}


@pytest.mark.parametrize("interception", ["proxy", "iptables"])
def test_the_hosts_move_to_vhds_unchanged_but_for_their_names(world: World, interception: str) -> None:
    whole = _with(world, interception=interception, vhds="off").snapshot(world.sidecar("productpage-v1-0"))
    split = _with(world, interception=interception, vhds="on").snapshot(world.sidecar("productpage-v1-0"))
    assert rt.VIRTUAL_HOST not in whole.by_type
    hosts = _hosts(split)
    assert hosts, "no virtual hosts over VHDS"
    for name, table in _tables(whole).items():
        renamed = f"{name}.vhds"  # a new name: the listener changes and Envoy warms it until the hosts arrived
        bare = _tables(split)[renamed]
        assert not bare.virtual_hosts and name not in _tables(split)
        assert bare.vhds.config_source.api_config_source.grpc_services[0].envoy_grpc.cluster_name == vhds.XDS_CLUSTER
        same = route_pb2.RouteConfiguration()
        same.CopyFrom(bare)
        same.ClearField("vhds")
        same.name = name
        expected = route_pb2.RouteConfiguration()
        expected.CopyFrom(table)
        expected.ClearField("virtual_hosts")
        assert same == expected  # every other setting of the table is kept
        for vh in table.virtual_hosts:
            moved = hosts[f"{renamed}/{vh.name}"]
            assert moved.name == f"{renamed}/{vh.name}"  # Envoy keys hosts by their own name: the resource's
            assert vhds.host_name(renamed, moved.name) == vh.name
            moved.name = vh.name
            assert moved == vh
    assert len(hosts) == sum(len(t.virtual_hosts) for t in _tables(whole).values())
    assert _rds_names(split) == {f"{n}.vhds" for n in _rds_names(whole)}  # every listener points at the new name
    split.consistent()


def _rds_names(snap: Snapshot) -> set[str]:
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

    out = set()
    for lst in snap.resources(rt.LISTENER).items.values():
        assert isinstance(lst, listener_pb2.Listener)
        for chain in [*lst.filter_chains, lst.default_filter_chain]:
            for f in chain.filters:
                if f.name == vhds.HCM:
                    m = hcm.HttpConnectionManager.FromString(f.typed_config.value)
                    if m.HasField("rds"):
                        out.add(m.rds.route_config_name)
    return out


def test_auto_keeps_small_tables_whole(world: World) -> None:
    snap = _with(world, vhds="auto").snapshot(world.sidecar("productpage-v1-0"))
    assert rt.VIRTUAL_HOST not in snap.by_type
    assert all(t.virtual_hosts for t in _tables(snap).values())


def test_auto_splits_a_table_of_many_hosts(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = _tables(_with(world, vhds="off").snapshot(world.sidecar("productpage-v1-0")))
    monkeypatch.setattr(vhds, "AUTO_MIN_HOSTS", len(tables["http_proxy"].virtual_hosts))
    snap = _with(world, vhds="auto").snapshot(world.sidecar("productpage-v1-0"))
    assert len(_hosts(snap)) == len(tables["http_proxy"].virtual_hosts)
    assert _rds_names(snap) == {"http_proxy.vhds"}


def test_gateways_keep_their_route_tables_whole(world: World) -> None:
    snap = _with(world, vhds="on").snapshot(world.gateway)
    assert rt.VIRTUAL_HOST not in snap.by_type


def test_a_one_route_change_changes_one_host_version(world: World) -> None:
    proxy = world.sidecar("productpage-v1-0")
    before = _with(world, vhds="on").snapshot(proxy)
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {"v3": 100})])
    world.config = MeshConfig(world.config.services, [r for r in world.config.resources if r.key != vs.key] + [vs])
    after = _with(world, vhds="on").snapshot(proxy)
    old, new = before.resources(rt.VIRTUAL_HOST).versions(), after.resources(rt.VIRTUAL_HOST).versions()
    assert old.keys() == new.keys()
    assert [n for n in new if old[n] != new[n]] == ["http_proxy.vhds/reviews.default.svc.cluster.local:9080"]
    assert before.version(rt.ROUTE) == after.version(rt.ROUTE)  # the table itself is not resent


def test_mesh_vhds_sets_the_default_and_a_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.errors import UsageError

    monkeypatch.setenv("MESH_VHDS", "on")
    assert MeshOptions().vhds == "on"
    monkeypatch.setenv("MESH_VHDS", "yes")
    with pytest.raises(UsageError, match="MESH_VHDS"):
        MeshOptions()
