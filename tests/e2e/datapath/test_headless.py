"""Headless services as Istio serves them under transparent interception: no VIP, every pod addressable by its
own name (`<pod>.<service>.<namespace>.svc.cluster.local`, a StatefulSet's DNS), reached through the caller's
sidecar (ORIGINAL_DST cluster: the pod the client dialled) and the pod's own sidecar, over mTLS."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from mesh.api import MeshConfig, Service, Version, helpers
from mesh.dataplane import netns
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.local.podclient import PodClient, resolve_in

pytestmark = pytest.mark.e2e

APP = ["{python}", "-m", "mesh.sampleapp"]
DB = "db.default.svc.cluster.local"
CALLER = "client-v1-0"
PEERS = ("db-v1-0", "db-v1-1")


def _config() -> MeshConfig:
    db = Service(name="db", headless=True, versions=[Version(name="v1", replicas=2, command=APP)])
    client = Service(name="client", versions=[Version(name="v1", command=APP)])
    return MeshConfig(services=[client, db]).add(*helpers.ingress("db", hosts=["db.local"], routes={"/": "db"}))


@pytest.fixture(scope="module", params=[False, True], ids=["hosts-file", "dns-proxy"])
def stateful(request: pytest.FixtureRequest) -> Iterator[LocalMeshUnderTest]:
    """Names from the pods' hosts files, or from their sidecars' DNS proxies (Istio's name table)."""
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)")
    m = LocalMeshUnderTest(_config(), interception="iptables", dns_proxy=request.param)
    try:
        yield m
    finally:
        m.stop()


def _client(m: LocalMeshUnderTest, pod: str = CALLER) -> PodClient:
    assert m.mesh.capture is not None
    return PodClient(m.mesh.capture.namespace(pod))


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
        assert resolve_in(client.ns, name) == _ip(stateful, pod)  # the pod's own address: there is no VIP
        seen: Counter[str] = Counter()
        for _ in range(8):  # one connection per request: a name never lands on the other replica
            r = client.get(f"http://{name}:9080/whoami")
            assert r.status == 200, r.text
            assert r.json["peer"] == "spiffe://cluster.local/ns/default/sa/client"  # XFCC from db's sidecar: mTLS
            seen[r.json["pod"]] += 1
        assert seen == {pod: 8}


def test_the_caller_routes_by_original_destination(stateful: LocalMeshUnderTest) -> None:
    """The caller's sidecar sends a pod name's request to the ORIGINAL_DST cluster, which connects to the
    dialled pod: its hosts appear in the cluster as they are used."""
    cluster = f"outbound|9080||{DB}"
    before = _stat(stateful, CALLER, f"cluster.{cluster}.upstream_rq_total")
    assert _client(stateful).get("http://db-v1-1.db:9080/").status == 200
    assert _stat(stateful, CALLER, f"cluster.{cluster}.upstream_rq_total") == before + 1
    dump = stateful.mesh.admin(next(p for p in stateful.mesh.registry.pods if p.name == CALLER)).config_dump(
        "dynamic_active_clusters"
    )
    (live,) = [c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == cluster]
    assert live["type"] == "ORIGINAL_DST" and live["lb_policy"] == "CLUSTER_PROVIDED"
    assert live["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def test_the_service_name_reaches_every_pod(stateful: LocalMeshUnderTest) -> None:
    """`db` resolves to the pods themselves (no VIP); whichever the client dials answers."""
    client = _client(stateful)
    r = client.get("http://db:9080/")
    assert r.status == 200 and r.json["pod"] in PEERS, r.text
    assert resolve_in(client.ns, "db") in {_ip(stateful, p) for p in PEERS}


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
