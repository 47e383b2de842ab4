"""Headless services: no VIP, every pod addressable by its own name (`<pod>.<service>.<namespace>.svc.cluster.local`,
a StatefulSet's DNS), reached through the caller's sidecar and the pod's own sidecar, over mTLS. Under transparent
interception as Istio does it (the name resolves to the pod, an ORIGINAL_DST cluster connects where the app dialled);
in the HTTP_PROXY mode by Host, to a cluster of that pod alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from mesh.api import MeshConfig, Service, ServicePort, Version, helpers
from mesh.dataplane import netns
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.base import Client
from mesh.targets.local.podclient import resolve_in

pytestmark = pytest.mark.e2e

APP = ["{python}", "-m", "mesh.sampleapp"]
DB = "db.default.svc.cluster.local"
CALLER = "client-v1-0"
PEERS = ("db-v1-0", "db-v1-1")


def _config() -> MeshConfig:
    db = Service(name="db", headless=True, versions=[Version(name="v1", replicas=2, command=APP)])
    client = Service(name="client", versions=[Version(name="v1", command=APP)])
    return MeshConfig(services=[client, db]).add(*helpers.ingress("db", hosts=["db.local"], routes={"/": "db"}))


@pytest.fixture(
    scope="module",
    params=[("proxy", False), ("iptables", False), ("iptables", True)],
    ids=["http-proxy", "hosts-file", "dns-proxy"],
)
def stateful(request: pytest.FixtureRequest) -> Iterator[LocalMeshUnderTest]:
    """HTTP_PROXY mode, or capture with names from the pods' hosts files or their sidecars' DNS proxies."""
    interception, dns_proxy = request.param
    ok, why = netns.available()
    if interception == "iptables" and not ok:
        pytest.fail(f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)")
    m = LocalMeshUnderTest(_config(), interception=interception, dns_proxy=dns_proxy)
    try:
        yield m
    finally:
        m.stop()


def _client(m: LocalMeshUnderTest, pod: str = CALLER) -> Client:
    return m.from_pod(pod)  # inside the pod's namespace under capture, through HTTP_PROXY otherwise


def _resolved(m: LocalMeshUnderTest, name: str, pod: str = CALLER) -> str | None:
    """The address the pod's app gets for `name` (None in the HTTP_PROXY mode: the sidecar is dialled)."""
    return resolve_in(m.mesh.capture.namespace(pod), name) if m.mesh.capture is not None else None


def _ip(m: LocalMeshUnderTest, pod: str) -> str:
    return next(p.ip for p in m.mesh.registry.pods if p.name == pod)


def _stat(m: LocalMeshUnderTest, pod: str, name: str) -> int:
    admin = m.mesh.admin(next(p for p in m.mesh.registry.pods if p.name == pod))
    return admin.stats("^" + name.replace(".", r"\.").replace("|", r"\|") + "$").get(name, 0)


@pytest.mark.parametrize("form", ["{pod}.db.default.svc.cluster.local", "{pod}.db.default", "{pod}.db"])
def test_each_pod_name_reaches_that_pod_through_both_sidecars_over_mtls(
    stateful: LocalMeshUnderTest, form: str
) -> None:
    client = _client(stateful)
    for pod in PEERS:
        name = form.format(pod=pod)
        if stateful.mesh.capture is not None:
            assert _resolved(stateful, name) == _ip(stateful, pod)  # the pod's own address: there is no VIP
        seen: Counter[str] = Counter()
        for _ in range(8):  # a name never lands on the other replica
            r = client.get(f"http://{name}:9080/whoami")
            assert r.status == 200, r.text
            assert r.json["peer"] == "spiffe://cluster.local/ns/default/sa/client"  # XFCC from db's sidecar: mTLS
            seen[r.json["pod"]] += 1
        assert seen == {pod: 8}


def test_the_callers_cluster_for_a_pod_name(stateful: LocalMeshUnderTest) -> None:
    """Under capture the caller's sidecar sends a pod name's request to the service's ORIGINAL_DST cluster (it
    connects where the app dialled); in the HTTP_PROXY mode to `outbound|9080||<pod>.<fqdn>`, that pod alone."""
    captured = stateful.mesh.capture is not None
    cluster = f"outbound|9080||{DB}" if captured else f"outbound|9080||db-v1-1.{DB}"
    before = _stat(stateful, CALLER, f"cluster.{cluster}.upstream_rq_total")
    assert _client(stateful).get("http://db-v1-1.db:9080/").status == 200
    assert _stat(stateful, CALLER, f"cluster.{cluster}.upstream_rq_total") == before + 1
    dump = stateful.mesh.admin(next(p for p in stateful.mesh.registry.pods if p.name == CALLER)).config_dump(
        "dynamic_active_clusters"
    )
    (live,) = [c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == cluster]
    if captured:
        assert live["type"] == "ORIGINAL_DST" and live["lb_policy"] == "CLUSTER_PROVIDED"
    else:
        assert live["type"] == "EDS"
    assert live["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def test_the_service_name_reaches_every_pod(stateful: LocalMeshUnderTest) -> None:
    """`db` resolves to the pods themselves (no VIP) and whichever the client dials answers; in the HTTP_PROXY mode
    the caller's sidecar picks one."""
    r = _client(stateful).get("http://db:9080/")
    assert r.status == 200 and r.json["pod"] in PEERS, r.text
    if stateful.mesh.capture is not None:
        assert _resolved(stateful, "db") in {_ip(stateful, p) for p in PEERS}


def test_a_pod_of_the_set_reaches_its_peer_by_name(stateful: LocalMeshUnderTest) -> None:
    """The pair talks to itself by name, as a StatefulSet's members do."""
    r = _client(stateful, "db-v1-0").get("http://db-v1-1.db:9080/")
    assert r.status == 200 and r.json["pod"] == "db-v1-1", r.text
    assert r.json["peer"] == "spiffe://cluster.local/ns/default/sa/db"


def test_the_ingress_gateway_reaches_the_headless_service(stateful: LocalMeshUnderTest) -> None:
    """The gateway is not captured: it reaches the service's pods through EDS (both of them, over mTLS)."""
    seen = set()
    for _ in range(40):
        r = stateful.ingress("db.local").get("/")
        assert r.status == 200, r.text
        assert r.json["peer"] == stateful.gateway_identity
        seen.add(r.json["pod"])
        if seen == set(PEERS):
            break
    assert seen == set(PEERS)  # a pod missed by 40 least-request picks over 2: p < 1e-6 if both are there


# --- a headless TCP service (transparent interception only: TCP needs it) ------------------------------------------


@pytest.fixture(scope="module")
def stateful_tcp() -> Iterator[LocalMeshUnderTest]:
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)")
    kv = Service(
        name="kv",
        headless=True,
        ports=[ServicePort(number=9000, name="tcp")],
        versions=[Version(name="v1", replicas=2, command=[*APP, "--tcp-echo"])],
    )
    client = Service(name="client", versions=[Version(name="v1", command=APP)])
    m = LocalMeshUnderTest(MeshConfig(services=[client, kv]).add(helpers.strict_mtls()), interception="iptables")
    try:
        yield m
    finally:
        m.stop()


def _echo(m: LocalMeshUnderTest, name: str) -> str:
    """One connection from the client pod to `name`:9000, one line echoed back ('' if refused)."""
    assert m.mesh.capture is not None
    ns = m.mesh.capture.namespace(CALLER)
    with netns.connect_in(ns, resolve_in(ns, name), 9000, 10.0) as sock:
        sock.sendall(b"hello\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def test_each_pod_of_a_headless_tcp_service_has_its_own_listener_and_is_reached_over_mtls(
    stateful_tcp: LocalMeshUnderTest,
) -> None:
    """Istio's per-endpoint listeners (`<pod ip>_9000`) take the client's connection to a pod by its original
    destination into the service's ORIGINAL_DST cluster: the pod answers (under STRICT, so over mTLS)."""
    listeners = stateful_tcp.mesh.admin(next(p for p in stateful_tcp.mesh.registry.pods if p.name == CALLER))
    for pod in ("kv-v1-0", "kv-v1-1"):
        ip = _ip(stateful_tcp, pod)
        before = _stat(stateful_tcp, CALLER, "cluster.outbound|9000||kv.default.svc.cluster.local.upstream_cx_total")
        for _ in range(4):
            assert _echo(stateful_tcp, f"{pod}.kv") == f"v1 {pod} hello"
        after = _stat(stateful_tcp, CALLER, "cluster.outbound|9000||kv.default.svc.cluster.local.upstream_cx_total")
        assert after - before == 4
        assert f"{ip}_9000" in {
            c["active_state"]["listener"]["name"]
            for c in listeners.config_dump("dynamic_listeners")["configs"]
            if "active_state" in c
        }
