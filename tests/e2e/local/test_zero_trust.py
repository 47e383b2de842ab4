"""Zero trust between local users: xDS, Envoy admin and the mesh's files are reachable only by the mesh's owner,
and a client that reaches the xDS socket still gets nothing without the proxy's own credential."""

from __future__ import annotations

import contextlib
import http.client
import queue
import stat
import threading
import time
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.server import NodeCredentials
from mesh.harness.under_test import LocalMeshUnderTest


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tcp_admin(ip: str, method: str, path: str) -> int:
    conn = http.client.HTTPConnection(ip, 15000, timeout=5)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_envoy_admin_is_owner_only_and_the_tcp_port_is_read_only(mesh: LocalMeshUnderTest) -> None:
    """Item 3: /drain_listeners, /quitquitquit and /logging are refused on the TCP port; the scrape still works."""
    local = mesh.mesh
    pod = next(p for p in local.registry.pods if p.service == "productpage")
    for method, path in [("POST", "/drain_listeners"), ("POST", "/quitquitquit"), ("POST", "/logging?level=trace")]:
        assert _tcp_admin(pod.ip, method, path) == 403, path
    assert _tcp_admin(pod.ip, "GET", "/config_dump") == 403
    assert _tcp_admin(pod.ip, "GET", "/stats/prometheus") == 200
    assert _tcp_admin(pod.ip, "GET", "/ready") == 200
    assert mesh.ingress("bookinfo.local").get("/productpage").status == 200
    assert _mode(local.private_dir) == 0o700
    assert local.admin(pod).ready()


def test_mesh_files_are_owner_only(mesh: LocalMeshUnderTest) -> None:
    """Item 7: bootstraps (node ids, credentials) and logs (ports) are not readable by other local users."""
    local = mesh.mesh
    assert _mode(local.options.state_dir) == 0o700
    assert _mode(local.run_dir) == 0o700
    bootstraps = list(local.run_dir.glob("envoy-*.json"))
    assert bootstraps and all(_mode(b) == 0o600 for b in bootstraps)


def test_a_fake_proxy_on_the_xds_socket_gets_no_key_and_cannot_veto(mesh: LocalMeshUnderTest) -> None:
    """Items 1-2: even a client that reaches the socket (the owner's own processes only) and claims a real node id
    gets no secret, and its NACK never reaches the bookkeeping."""
    local = mesh.mesh
    assert local.xds is not None
    proxy = next(p for p in local.registry.proxies if p.kind == "sidecar")
    before = local.pilot.cache.status(proxy.id).streams
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    responses: list[discovery_pb2.DiscoveryResponse] = []
    channel = grpc.insecure_channel(local.xds.address)
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter(requests.get, None))

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            responses.extend(call)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    node = base_pb2.Node(id=proxy.id)
    node.metadata.fields[NodeCredentials.KEY].string_value = NodeCredentials().token(proxy.id)  # another CP's
    requests.put(discovery_pb2.DiscoveryRequest(node=node, type_url=rt.SECRET, resource_names=["default"]))
    requests.put(discovery_pb2.DiscoveryRequest(type_url=rt.CLUSTER, response_nonce="1"))
    reader.join(timeout=5)
    requests.put(None)
    channel.close()
    assert responses == []
    assert local.pilot.cache.status(proxy.id).streams == before
    deadline = time.monotonic() + 5
    while local.pilot.cache.sync_state(proxy.id).state != "SYNCED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert local.pilot.cache.sync_state(proxy.id).state == "SYNCED"


def test_status_notices_a_draining_proxy(mesh: LocalMeshUnderTest) -> None:
    """Item 3: a proxy told to drain (here by its owner, over the socket) is reported, not shown as fine."""
    local = mesh.mesh
    gateway = local.gateway
    assert gateway is not None
    assert not any(p.errors for p in local.proxy_status())
    status, _ = local.admin(gateway).request("POST", "/drain_listeners")
    assert status == 200
    try:
        rows = {p.proxy: p for p in local.proxy_status()}
        assert "admin" in rows[gateway.short].errors
    finally:
        local.supervisor.kill(f"envoy/{gateway.name}")  # the supervisor restarts it with its listeners back
        assert local.supervisor.wait_ready(f"envoy/{gateway.name}", local.admin(gateway).ready, timeout=20)
        ids = [p.id for p in local.registry.proxies]
        local.pilot.cache.wait_synced(ids, timeout=15)


def test_apps_are_reachable_only_through_their_sidecar(mesh: LocalMeshUnderTest) -> None:
    """Items 4-5: the sample app listens on an owner-only Unix socket, so no local user can call it around its
    sidecar (with a forged XFCC) or take its address while it restarts; its old TCP address answers nothing."""
    local = mesh.mesh
    pod = next(p for p in local.registry.pods if p.service == "reviews")
    assert pod.app_socket and Path(pod.app_socket).parent == local.private_dir
    assert _mode(Path(pod.app_socket)) == 0o600
    try:
        http.client.HTTPConnection(pod.app_ip, pod.ports[0].number, timeout=2).request("GET", "/")
        reached = True
    except OSError:
        reached = False
    assert not reached
    r = mesh.from_pod("productpage").get("http://reviews:9080/")
    assert r.status == 200 and r.json["peer"].endswith("/sa/productpage")
