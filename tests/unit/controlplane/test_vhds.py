"""VHDS: virtual hosts over their own delta stream. The protocol as Envoy speaks it (driven by a real gRPC client
that behaves like Envoy 1.40: one stream per route table, a wildcard first request), and the Pilot's all-or-nothing
push through it."""

from __future__ import annotations

import http.client
import itertools
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.route.v3 import rds_pb2_grpc
from google.rpc import status_pb2

from mesh.cli import proxyconfig
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot
from mesh.controlplane.translate import MeshOptions, vhds
from mesh.controlplane.translate.protos import ads, packed
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.cache import NodeStatus, SnapshotCache
from mesh.controlplane.xds.server import NodeCredentials, XdsServer
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.dataplane import envoy
from mesh.dataplane.addresses import allocate_block
from mesh.errors import PushRejected
from mesh.runtime import Proxy, Registry, pods_for
from tests.unit.controlplane.xdsclient import StreamClient

NODE = "sidecar~127.0.0.9~test-0.default~default.svc.cluster.local"


def host(name: str, body: str, domain: str = "") -> rc.VirtualHost:
    return rc.VirtualHost(
        name=f"http_proxy/{name}",
        domains=[domain or name],
        routes=[
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(status=200, body={"inline_string": body}),
            )
        ],
    )


def table() -> route_pb2.RouteConfiguration:
    t = route_pb2.RouteConfiguration(name="http_proxy")
    t.vhds.config_source.CopyFrom(vhds.source())
    return t


def snap(*hosts: rc.VirtualHost) -> Snapshot:
    """Only the hosts: the route table's own ADS stream is not part of these tests."""
    return Snapshot.build(virtual_hosts=list(hosts))


def _ads_connected(ns: NodeStatus) -> None:
    ns.connected, ns.streams = True, 1


class DeltaClient(StreamClient[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]):
    """One Envoy VHDS stream: DeltaDiscoveryRequests in, DeltaDiscoveryResponses out."""

    def __init__(self, port: int, *, token: str = "", node: str = NODE) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = rds_pb2_grpc.VirtualHostDiscoveryServiceStub(channel)
        super().__init__(channel, stub.DeltaVirtualHosts, token)
        self.node_id = node
        self.closed = threading.Event()

    def send(self, *, nonce: str = "", error: str = "", held: dict[str, str] | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            node=self.node(self.node_id),
            type_url=rt.VIRTUAL_HOST,
            response_nonce=nonce,
            initial_resource_versions=held or {},
        )
        if error:
            req.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        self.requests.put(req)

    def answer_all(self, reject: Callable[[discovery_pb2.DeltaDiscoveryResponse], str]) -> None:
        """From now on ACK every response, or NACK with `reject`'s text when it returns one (as Envoy would)."""

        def loop() -> None:
            while not self.closed.is_set():
                try:
                    r = self.recv(timeout=0.1)
                except queue.Empty:
                    continue
                self.send(nonce=r.nonce, error=reject(r))

        threading.Thread(target=loop, daemon=True).start()

    def close(self) -> None:
        self.closed.set()
        super().close()


def names(r: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [res.name for res in r.resources]


def body(r: discovery_pb2.DeltaDiscoveryResponse, name: str) -> str:
    res = next(res for res in r.resources if res.name == name)
    vh = rc.VirtualHost.FromString(res.resource.value)
    return str(vh.routes[0].direct_response.body.inline_string)


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def server(cache: SnapshotCache) -> Iterator[XdsServer]:
    cache.record(NODE, _ads_connected)  # as the proxy's ADS stream would
    s = XdsServer(cache, port=0, max_proxies=8).start()
    yield s
    s.stop(0)


@pytest.fixture
def client(server: XdsServer) -> Iterator[DeltaClient]:
    c = DeltaClient(server.port)
    yield c
    c.close()


def test_a_wildcard_stream_gets_every_host_then_only_what_changed(cache: SnapshotCache, client: DeltaClient) -> None:
    whole = snap(host("a", "a1"), host("b", "b1"), host("c", "c1"))
    cache.set_snapshot(NODE, whole)
    client.send()
    first = client.recv()
    assert names(first) == ["http_proxy/a", "http_proxy/b", "http_proxy/c"] and not first.removed_resources
    assert first.type_url == rt.VIRTUAL_HOST and first.system_version_info == whole.version(rt.VIRTUAL_HOST)
    client.send(nonce=first.nonce)
    assert client.silent()  # an ACK is not answered

    cache.set_snapshot(NODE, snap(host("a", "a2"), host("b", "b1"), host("c", "c1")))
    second = client.recv()
    assert names(second) == ["http_proxy/a"] and body(second, "http_proxy/a") == "a2"
    assert cache.status(NODE).types[rt.VIRTUAL_HOST].sent_resources == 1
    client.send(nonce=second.nonce)

    cache.set_snapshot(NODE, snap(host("a", "a2"), host("c", "c1")))
    third = client.recv()
    assert names(third) == [] and list(third.removed_resources) == ["http_proxy/b"]
    client.send(nonce=third.nonce)
    assert cache.wait_synced([NODE], 2)[NODE].state == "SYNCED"


def test_one_response_in_flight_and_the_next_is_computed_from_its_answer(
    cache: SnapshotCache, client: DeltaClient
) -> None:
    cache.set_snapshot(NODE, snap(host("a", "a1"), host("b", "b1")))
    client.send()
    first = client.recv()
    cache.set_snapshot(NODE, snap(host("a", "a2"), host("b", "b1")))
    cache.set_snapshot(NODE, snap(host("a", "a3"), host("b", "b1")))
    assert client.silent()  # nothing more until the first is answered
    client.send(nonce=first.nonce)
    second = client.recv()
    assert names(second) == ["http_proxy/a"] and body(second, "http_proxy/a") == "a3"


def test_a_nack_is_recorded_not_resent_and_a_rollback_sends_nothing(cache: SnapshotCache, client: DeltaClient) -> None:
    good = snap(host("a", "a1"), host("b", "b1"))
    cache.set_snapshot(NODE, good)
    client.send()
    client.send(nonce=client.recv().nonce)
    bad = snap(host("a", "a1"), host("b", "b1"), host("c", "dup", domain="a"))
    cache.set_snapshot(NODE, bad)
    r = client.recv()
    assert names(r) == ["http_proxy/c"]
    client.send(nonce=r.nonce, error="Only unique values for domains are permitted. Duplicate entry of domain a")
    result = cache.wait_synced([NODE], 2)[NODE]
    assert result.state == "NACK" and result.errors["VHDS"].startswith("Only unique values for domains")
    assert client.silent()  # the rejected hosts are not sent again

    cache.set_snapshot(NODE, good)  # the Pilot's rollback: Envoy still holds exactly this
    assert client.silent()
    assert cache.wait_synced([NODE], 2)[NODE].state == "SYNCED"

    cache.set_snapshot(NODE, snap(host("a", "a2"), host("b", "b1")))  # and pushes go on from there
    assert names(client.recv()) == ["http_proxy/a"]


def test_a_node_with_a_stream_per_table_is_synced_only_when_every_stream_acked(
    cache: SnapshotCache, server: XdsServer
) -> None:
    """Envoy opens one VHDS stream per route table, each validating the hosts on its own."""
    cache.set_snapshot(NODE, snap(host("a", "a1")))
    first, second = DeltaClient(server.port), DeltaClient(server.port)
    try:
        first.send()
        first.send(nonce=first.recv().nonce)
        second.send()
        r = second.recv()
        assert cache.sync_state(NODE).state == "STALE"  # the second table has not taken the hosts yet
        second.send(nonce=r.nonce)
        assert cache.wait_synced([NODE], 2)[NODE].state == "SYNCED"

        cache.set_snapshot(NODE, snap(host("a", "a2")))
        first.send(nonce=first.recv().nonce)
        second.send(nonce=second.recv().nonce, error="rejected by the second table")
        result = cache.wait_synced([NODE], 2)[NODE]
        assert result.state == "NACK" and result.errors == {"VHDS": "rejected by the second table"}
    finally:
        first.close()
        second.close()


def test_a_stale_nonce_acknowledges_nothing(cache: SnapshotCache, client: DeltaClient) -> None:
    cache.set_snapshot(NODE, snap(host("a", "a1")))
    client.send()
    r = client.recv()
    client.send(nonce="not-" + r.nonce)
    assert cache.status(NODE).types[rt.VIRTUAL_HOST].acked == ""
    client.send(nonce=r.nonce)
    assert cache.wait_synced([NODE], 2)[NODE].state == "SYNCED"


def test_a_reconnecting_envoy_is_sent_only_what_differs_from_what_it_holds(
    cache: SnapshotCache, server: XdsServer
) -> None:
    cache.set_snapshot(NODE, snap(host("a", "a1"), host("b", "b1")))
    first = DeltaClient(server.port)
    first.send()
    held = {res.name: res.version for res in first.recv().resources}
    first.close()
    cache.set_snapshot(NODE, snap(host("a", "a2"), host("b", "b1"), host("c", "c1")))
    again = DeltaClient(server.port)
    try:
        again.send(held={**held, "http_proxy/gone": "x"})
        r = again.recv()
        assert names(r) == ["http_proxy/a", "http_proxy/c"] and list(r.removed_resources) == ["http_proxy/gone"]
    finally:
        again.close()


def test_a_stream_without_its_credential_gets_nothing(cache: SnapshotCache) -> None:
    creds = NodeCredentials()
    server = XdsServer(cache, port=0, credentials=creds).start()
    cache.set_snapshot(NODE, snap(host("a", "a1")))
    forged, real = DeltaClient(server.port, token="forged"), DeltaClient(server.port, token=creds.token(NODE))
    try:
        forged.send()
        assert forged.silent(0.5)
        real.send()
        assert names(real.recv()) == ["http_proxy/a"]
    finally:
        forged.close()
        real.close()
        server.stop(0)


def test_state_of_the_world_ads_never_serves_virtual_hosts(cache: SnapshotCache, server: XdsServer) -> None:
    from tests.unit.controlplane.test_xds_server import Client

    cache.set_snapshot(NODE, snap(host("a", "a1")))
    c = Client(server.port)
    try:
        c.send(rt.VIRTUAL_HOST, names=("http_proxy",))
        assert c.silent()
    finally:
        c.close()


# --- one real Envoy ---------------------------------------------------------------------------------------------


class _Envoy:
    """A real Envoy bootstrapped like every sidecar (`envoy.bootstrap`), with one HTTP listener on `:15001` whose
    route table `http_proxy` comes over RDS and its hosts over VHDS."""

    def __init__(self, tmp: Path) -> None:
        block = allocate_block()
        self.ip = f"127.{block.b}.1.1"
        self.proxy = Proxy(kind="sidecar", ip=self.ip, name="a-0", namespace="default", labels={"app": "a"},
                           service_account="a")  # fmt: skip
        self.cache = SnapshotCache()
        creds = NodeCredentials()
        self.server = XdsServer(self.cache, host=self.ip, port=0, credentials=creds).start()
        config = envoy.bootstrap(self.proxy, self.ip, self.server.port, admin_port=15000,
                                 node_metadata={NodeCredentials.KEY: creds.token(self.proxy.id)})  # fmt: skip
        self.log = tmp / "envoy.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(envoy.command(envoy.write_bootstrap(tmp / "envoy.json", config)),
                                         stdout=out, stderr=out)  # fmt: skip
        self.admin = envoy.Admin(self.ip, 15000)

    def push(self, *hosts: rc.VirtualHost) -> str:
        self.cache.set_snapshot(self.proxy.id, Snapshot.build(listeners=[self._listener()], routes=[table()],
                                                              virtual_hosts=list(hosts)))  # fmt: skip
        return self.cache.wait_synced([self.proxy.id], 10)[self.proxy.id].state

    def _listener(self, table: str = "http_proxy") -> listener_pb2.Listener:
        manager = hcm.HttpConnectionManager(
            stat_prefix="out",
            rds=hcm.Rds(route_config_name=table, config_source=ads()),
            http_filters=[hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))],
        )
        chain = lc.FilterChain(
            filters=[lc.Filter(name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))]
        )
        address = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=self.ip, port_value=15001))
        return listener_pb2.Listener(name="out", address=address, filter_chains=[chain])

    def get(self, host_header: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.ip, 15001, timeout=5)
        try:
            conn.request("GET", "/", headers={"Host": host_header})
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.admin.ready():
            assert self.proc.poll() is None, f"Envoy exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"Envoy not ready: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.server.stop(0)


@pytest.fixture
def real_envoy(tmp_path: Path) -> Iterator[_Envoy]:
    e = _Envoy(tmp_path)
    try:
        yield e
    finally:
        e.stop()


@pytest.mark.e2e
def test_envoy_routes_by_hosts_from_vhds_and_keeps_the_last_good_ones(real_envoy: _Envoy) -> None:
    e = real_envoy
    assert e.push(host("a", "a1"), host("b", "b1")) in ("SYNCED", "STALE")  # Envoy may not have connected yet
    e.wait_ready()  # the listener warms until the first VHDS response
    assert e.cache.wait_synced([e.proxy.id], 10)[e.proxy.id].state == "SYNCED"
    assert (e.get("a"), e.get("b")) == ((200, "a1"), (200, "b1"))

    assert e.push(host("a", "a2"), host("b", "b1")) == "SYNCED"
    assert e.cache.status(e.proxy.id).types[rt.VIRTUAL_HOST].sent_resources == 1  # only the changed host went
    assert (e.get("a"), e.get("b")) == ((200, "a2"), (200, "b1"))

    assert e.push(host("a", "a2")) == "SYNCED"
    assert e.get("b")[0] == 404  # removed: no virtual host matches any more

    assert e.push(host("a", "a3"), host("c", "dup", domain="a")) == "NACK"
    error = e.cache.sync_state(e.proxy.id).errors["VHDS"]
    assert "Duplicate entry of domain a" in error
    assert e.get("a") == (200, "a2")  # the previous hosts keep serving

    dump = e.admin.config_dump("dynamic_route_configs")["configs"]
    (config,) = dump
    hosts = config["route_config"]["virtual_hosts"]
    assert [h["name"] for h in hosts] == ["http_proxy/a"]  # merged into the table, named as delivered
    assert config["route_config"]["vhds"]["config_source"]["api_config_source"]["api_type"] == "DELTA_GRPC"
    # `mesh proxy-config routes` shows the host as translated, and that its table came over VHDS
    text = proxyconfig.render("routes", e.admin.config_dump(), admin=e.admin)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("http_proxy")]
    assert line.split()[:3] == ["http_proxy", "(VHDS)", "a"], text


# --- the Pilot's all-or-nothing push ---------------------------------------------------------------------------


class _AdsAcker:
    """A proxy's state-of-the-world ADS side: ACKs every type but the virtual hosts (those go over VHDS)."""

    def __init__(self, cache: SnapshotCache, node_id: str) -> None:
        self.cache, self.node_id = cache, node_id
        cache.record(node_id, _ads_connected)
        cache.watch(node_id, self._on_snapshot)
        self._on_snapshot()

    def _on_snapshot(self) -> None:
        snap = self.cache.get_snapshot(self.node_id)
        assert snap is not None
        for type_url in snap.by_type:
            if type_url != rt.VIRTUAL_HOST:
                self.cache.record(self.node_id, _acked(type_url, snap.version(type_url)))


def _acked(type_url: str, version: str) -> Callable[[NodeStatus], None]:
    def update(ns: NodeStatus) -> None:
        ns.type(type_url).acked = version

    return update


def test_a_nacked_virtual_host_rolls_every_proxy_back(cache: SnapshotCache, server: XdsServer) -> None:
    from tests.unit.controlplane.test_pilot import _config

    counter = itertools.count(1)
    registry = Registry()
    for svc in _config(0).services:
        for pod in pods_for(svc, lambda: (f"127.98.{next(counter)}.1", "127.98.0.2")):
            registry.add_pod(pod)
    pilot = Pilot(registry, CertificateAuthority(), cache, options=MeshOptions(vhds="on"))
    good = _config(10)
    pilot.push(good, wait=0)
    nacker = next(p.id for p in registry.proxies if p.name == "reviews-v2-0")

    def reject_weight_50(r: discovery_pb2.DeltaDiscoveryResponse) -> str:
        for res in r.resources:
            vh = rc.VirtualHost.FromString(res.resource.value)
            if any(c.weight.value == 50 for route in vh.routes for c in route.route.weighted_clusters.clusters):
                return "Proto constraint validation failed (VirtualHostValidationError: bad weight)"
        return ""

    clients = []
    try:
        for p in registry.proxies:
            _AdsAcker(cache, p.id)
            c = DeltaClient(server.port, node=p.id)
            c.answer_all(reject_weight_50 if p.id == nacker else lambda _: "")
            c.send()
            clients.append(c)
        deadline = time.monotonic() + 5
        while not all(rt.VIRTUAL_HOST in cache.status(p.id).types for p in registry.proxies):
            assert time.monotonic() < deadline, "VHDS streams not answered"
            time.sleep(0.01)
        assert all(r.state == "SYNCED" for r in cache.wait_synced([p.id for p in registry.proxies], 5).values())
        applied = {p.id: s for p in registry.proxies if (s := cache.get_snapshot(p.id)) is not None}
        before_push = time.time()

        with pytest.raises(PushRejected) as rejected:
            pilot.push(_config(50), wait=5.0)

        assert set(rejected.value.rejections) == {nacker}
        assert "bad weight" in rejected.value.rejections[nacker]
        assert pilot.config is good and pilot.revision == 1
        for p in registry.proxies:
            assert cache.get_snapshot(p.id) is applied[p.id]
            assert cache.sync_state(p.id).state == "SYNCED", p.id
            # the accepting proxies took the new host and were sent the old one back; the nacker applied nothing,
            # so it is sent nothing and still holds the old one
            st, old = cache.status(p.id).types[rt.VIRTUAL_HOST], applied[p.id].version(rt.VIRTUAL_HOST)
            assert st.acked == old and st.sent_at > before_push and st.sent_resources == 1
            assert (st.sent != old) == (p.id == nacker)
    finally:
        for c in clients:
            c.close()


@pytest.mark.e2e
def test_a_table_moving_to_vhds_serves_every_request_meanwhile(real_envoy: _Envoy) -> None:
    """Translation renames a table it moves to VHDS (`<table>.vhds`) and points the listener at it: Envoy warms the
    new listener until the table and its hosts arrived. In place (same name), the table was empty between its RDS
    update and the hosts' arrival, and requests got 404s (5 of ~600 in 0.5 s, measured)."""
    e = real_envoy
    whole = route_pb2.RouteConfiguration(name="http_proxy")
    for h in (host("a", "a1"), host("b", "b1")):
        h.name = h.name.removeprefix("http_proxy/")
        whole.virtual_hosts.append(h)
    e.cache.set_snapshot(e.proxy.id, Snapshot.build(listeners=[e._listener()], routes=[whole]))
    e.wait_ready()
    statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            statuses.append(e.get("a")[0])

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        while len(statuses) < 20:
            time.sleep(0.01)
        renamed = route_pb2.RouteConfiguration(name="http_proxy.vhds")
        renamed.vhds.config_source.CopyFrom(vhds.source())
        moved = [host("a", "a2"), host("b", "b2")]
        for h in moved:
            h.name = "http_proxy.vhds/" + h.name.removeprefix("http_proxy/")
        e.cache.set_snapshot(
            e.proxy.id,
            Snapshot.build(listeners=[e._listener("http_proxy.vhds")], routes=[renamed], virtual_hosts=moved),
        )
        assert e.cache.wait_synced([e.proxy.id], 10)[e.proxy.id].state == "SYNCED"
        deadline = time.monotonic() + 10
        while e.get("a")[1] != "a2":  # the new listener took over once warm
            assert time.monotonic() < deadline, "the VHDS table never took over"
            time.sleep(0.01)
        seen = len(statuses)
        while len(statuses) < seen + 20:
            time.sleep(0.01)
    finally:
        stop.set()
        poller.join()
    assert set(statuses) == {200}, f"{statuses.count(404)} of {len(statuses)} requests failed during the move"
