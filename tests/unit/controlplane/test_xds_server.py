"""The ADS server speaks state-of-the-world xDS the way Envoy needs it; driven here by a real gRPC client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from mesh.controlplane.translate.protos import ads
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.cache import SnapshotCache
from mesh.controlplane.xds.server import NodeCredentials, XdsServer
from mesh.controlplane.xds.snapshot import InconsistentSnapshot, Snapshot
from tests.unit.controlplane.xdsclient import StreamClient

NODE = "sidecar~127.0.0.9~test-0.default~default.svc.cluster.local"


def snap(*names: str) -> Snapshot:
    clusters = [
        cluster_pb2.Cluster(
            name=n,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name=n, eds_config=ads()),
        )
        for n in names
    ]
    return Snapshot.build(
        clusters=clusters, endpoints=[endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in names]
    )


class Client(StreamClient[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    """A minimal Envoy stand-in: sends DiscoveryRequests, collects DiscoveryResponses."""

    def __init__(self, port: int, *, address: str = "", token: str = "") -> None:
        channel = grpc.insecure_channel(address or f"127.0.0.1:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        super().__init__(channel, stub.StreamAggregatedResources, token)

    def send(
        self, type_url: str, *, version: str = "", nonce: str = "", names: tuple[str, ...] = (), error: str = ""
    ) -> None:
        req = discovery_pb2.DiscoveryRequest(
            node=self.node(NODE),
            type_url=type_url,
            version_info=version,
            response_nonce=nonce,
            resource_names=list(names),
        )
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(req)


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def client(cache: SnapshotCache) -> Iterator[Client]:
    server = XdsServer(cache, port=0, max_proxies=8).start()
    c = Client(server.port)
    yield c
    c.close()
    server.stop(0)


def test_initial_request_is_answered_and_ack_is_not(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, snap("a", "b"))
    client.send(rt.CLUSTER)
    r = client.recv()
    assert r.type_url == rt.CLUSTER and len(r.resources) == 2
    client.send(rt.CLUSTER, version=r.version_info, nonce=r.nonce)
    assert client.silent()
    assert cache.status(NODE).types[rt.CLUSTER].acked == r.version_info


def test_eds_answers_only_the_names_asked_for(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, snap("a", "b"))
    client.send(rt.ENDPOINT, names=("b",))
    r = client.recv()
    assert [endpoint_pb2.ClusterLoadAssignment.FromString(a.value).cluster_name for a in r.resources] == ["b"]


def test_nack_is_recorded_with_envoys_error_and_not_resent(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, snap("a"))
    client.send(rt.CLUSTER)
    r = client.recv()
    client.send(rt.CLUSTER, version="", nonce=r.nonce, error="Proto constraint validation failed")
    assert client.silent()
    state = cache.sync_state(NODE)
    assert state.state == "NACK" and state.errors == {"CDS": "Proto constraint validation failed"}


def test_stale_nonces_are_ignored(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, snap("a"))
    client.send(rt.CLUSTER)
    first = client.recv()
    cache.set_snapshot(NODE, snap("a", "b"))
    second = client.recv()
    client.send(rt.CLUSTER, version=first.version_info, nonce=first.nonce, error="late NACK for an old response")
    assert client.silent()
    assert cache.status(NODE).types[rt.CLUSTER].error == ""
    client.send(rt.CLUSTER, version=second.version_info, nonce=second.nonce)
    assert cache.status(NODE).types[rt.CLUSTER].acked == second.version_info or client.silent(0.2)


def test_children_are_answered_again_after_a_parent_update(cache: SnapshotCache, client: Client) -> None:
    """Envoy re-requests EDS with unchanged version and nonce after CDS changes; silence would leave it warming."""
    cache.set_snapshot(NODE, snap("a"))
    client.send(rt.CLUSTER)
    cds = client.recv()
    client.send(rt.CLUSTER, version=cds.version_info, nonce=cds.nonce)
    client.send(rt.ENDPOINT, names=("a",))
    eds = client.recv()
    client.send(rt.ENDPOINT, version=eds.version_info, nonce=eds.nonce, names=("a",))
    assert client.silent()
    # a CDS-only change: same EDS content, so the snapshot update sends CDS alone
    changed = Snapshot.build(
        clusters=[
            cluster_pb2.Cluster(
                name="a",
                type=cluster_pb2.Cluster.EDS,
                connect_timeout={"seconds": 3},
                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name="a", eds_config=ads()),
            )
        ],
        endpoints=[endpoint_pb2.ClusterLoadAssignment(cluster_name="a")],
    )
    cache.set_snapshot(NODE, changed)
    cds2 = client.recv()
    assert cds2.type_url == rt.CLUSTER
    client.send(rt.CLUSTER, version=cds2.version_info, nonce=cds2.nonce)
    client.send(rt.ENDPOINT, version=eds.version_info, nonce=eds.nonce, names=("a",))  # the warming re-request
    again = client.recv()
    assert again.type_url == rt.ENDPOINT and again.nonce != eds.nonce


def test_only_changed_types_are_pushed(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, snap("a"))
    client.send(rt.CLUSTER)
    cds = client.recv()
    client.send(rt.CLUSTER, version=cds.version_info, nonce=cds.nonce)
    cache.set_snapshot(NODE, snap("a"))  # identical content
    assert client.silent()


def test_wait_synced_reports_acks(cache: SnapshotCache, client: Client) -> None:
    cache.set_snapshot(NODE, Snapshot.build(clusters=[cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)]))
    client.send(rt.CLUSTER)
    r = client.recv()
    assert cache.wait_synced([NODE], timeout=0.2)[NODE].state == "STALE"
    client.send(rt.CLUSTER, version=r.version_info, nonce=r.nonce)
    assert cache.wait_synced([NODE], timeout=2.0)[NODE].state == "SYNCED"


def test_inconsistent_snapshots_are_refused(cache: SnapshotCache) -> None:
    bad = Snapshot.build(clusters=snap("a").resources(rt.CLUSTER).items.values())
    with pytest.raises(InconsistentSnapshot, match="EDS clusters without endpoints"):
        cache.set_snapshot(NODE, bad)


def test_a_new_stream_forgets_what_the_old_one_acked(cache: SnapshotCache) -> None:
    """A restarted Envoy has nothing: SYNCED must wait for its own ACKs, and an overlapping close keeps it connected."""
    server = XdsServer(cache, port=0, max_proxies=8).start()
    try:
        cache.set_snapshot(
            NODE, Snapshot.build(clusters=[cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)])
        )
        first = Client(server.port)
        first.send(rt.CLUSTER)
        r = first.recv()
        first.send(rt.CLUSTER, version=r.version_info, nonce=r.nonce)
        assert cache.wait_synced([NODE], timeout=2)[NODE].state == "SYNCED"
        second = Client(server.port)
        second.send(rt.CLUSTER)
        second.recv()
        assert cache.sync_state(NODE).state == "STALE"  # the new Envoy has not ACKed yet
        first.close()
        deadline = time.monotonic() + 2
        while cache.status(NODE).streams != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.status(NODE).connected
        second.close()
    finally:
        server.stop(0)


OTHER = "sidecar~127.0.0.10~other-0.default~default.svc.cluster.local"


@pytest.mark.parametrize(
    "token",
    ["", "forged", NodeCredentials().token(NODE), "other-node"],
    ids=["none", "forged", "another-control-plane", "other-node"],  # stable ids: parallel workers must agree
)
def test_a_stream_without_its_own_credential_gets_nothing_and_counts_for_nothing(
    cache: SnapshotCache, tmp_path: Path, token: str
) -> None:
    """Item 1-2: a local user who claims a proxy's node id (with no token, a forged one, one minted by another
    control plane, or another proxy's) is served nothing (no SDS key) and its NACKs never veto a push."""
    creds = NodeCredentials()
    if token == "other-node":
        token = creds.token(OTHER)
    server = XdsServer(cache, max_proxies=8, unix_socket=tmp_path / "xds.sock", credentials=creds).start()
    try:
        cache.set_snapshot(NODE, snap("a"))
        intruder = Client(0, address=server.address, token=token)
        intruder.send(rt.CLUSTER)
        intruder.send(rt.CLUSTER, nonce="1", error="vetoed")
        assert intruder.silent(0.5)
        assert not cache.status(NODE).connected and not cache.status(NODE).types
        intruder.close()
        proxy = Client(0, address=server.address, token=creds.token(NODE))
        proxy.send(rt.CLUSTER)
        r = proxy.recv()
        proxy.send(rt.CLUSTER, version=r.version_info, nonce=r.nonce)
        assert cache.wait_synced([NODE], timeout=2)[NODE].state == "SYNCED"
        proxy.close()
    finally:
        server.stop(0)
