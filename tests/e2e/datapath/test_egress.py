"""External services as Istio serves them, on the real data path (iptables capture, DNS proxying, REGISTRY_ONLY):
ServiceEntries by resolution (DNS through the egress gateway, STATIC over a WorkloadEntry, NONE), each sidecar's
DNS answering service and ServiceEntry names, TLS origination (SIMPLE, MUTUAL) by DestinationRule, and unknown
hosts blocked. "External" hosts are test servers in namespaces of their own on the mesh's bridge."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.api import (
    ClientTLSSettings,
    Destination,
    DestinationRule,
    Gateway,
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
    Port,
    PortSelector,
    PortTrafficPolicy,
    Server,
    ServerTLSSettings,
    Service,
    ServiceEntry,
    ServiceEntryPort,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadSelector,
)
from mesh.api.config import MeshConfig
from mesh.dataplane import dns, netns
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.local.podclient import PodClient
from policies.workloads import _version

from ..conftest import replace
from .externals import Pki, external_server, make_pki

pytestmark = pytest.mark.e2e

EGRESS_HOST = "istio-egressgateway.istio-system.svc.cluster.local"
HTTPBIN = "httpbin.external.test"  # DNS, routed through the egress gateway
TLS_HOST = "tls.external.test"  # DNS, port 80 -> 443 with TLS originated by the sidecar
TCP_HOST = "tcp.external.test"  # STATIC over a WorkloadEntry, TCP
NONE_HOST = "none.external.test"  # resolution NONE: the client's own destination
UNKNOWN = "unknown.external.test"  # a real test host no ServiceEntry names
SECURE = "secure.external.test"  # HTTPS only: mTLS to the egress gateway, TLS originated there


def _workloads() -> MeshConfig:
    sleep = Service(name="sleep", versions=[_version("v1", calls=f"http://{HTTPBIN}/status;timeout=5")])
    egress = Gateway(
        name="istio-egressgateway",
        namespace="istio-system",
        selector={"istio": "egressgateway"},
        servers=[
            Server(port=Port(number=80, name="http", protocol="HTTP"), hosts=[HTTPBIN]),
            Server(
                port=Port(number=443, name="https", protocol="HTTPS"),
                hosts=[SECURE],
                tls=ServerTLSSettings(mode="ISTIO_MUTUAL"),
            ),
        ],
    )
    return MeshConfig().add(sleep, egress)


def _entries(pki: Pki, tcp_ip: str, server_san: str = TLS_HOST) -> list[object]:
    http = ServiceEntryPort(number=80, name="http", protocol="HTTP")
    via_gateway = VirtualService(
        name="httpbin-via-egress",
        hosts=[HTTPBIN],
        gateways=["istio-system/istio-egressgateway", "mesh"],
        http=[
            HTTPRoute(
                match=[HTTPMatchRequest(gateways=["mesh"], port=80)],
                route=[HTTPRouteDestination(destination=Destination(host=EGRESS_HOST, port=PortSelector(number=80)))],
            ),
            HTTPRoute(
                match=[HTTPMatchRequest(gateways=["istio-system/istio-egressgateway"], port=80)],
                route=[HTTPRouteDestination(destination=Destination(host=HTTPBIN, port=PortSelector(number=80)))],
            ),
        ],
    )
    simple = ClientTLSSettings(mode="SIMPLE", ca_certificates=str(pki.ca), subject_alt_names=[server_san])
    mutual = ClientTLSSettings(mode="MUTUAL", credential_name="tls-client", sni=TLS_HOST)
    # Istio's "egress gateway with TLS origination": the sidecar speaks mTLS to the gateway (SNI the host), the
    # gateway originates TLS to the host
    https = ServiceEntryPort(number=443, name="https", protocol="HTTPS")
    secure = [
        ServiceEntry(name="secure", hosts=[SECURE], ports=[http, https], resolution="DNS"),
        DestinationRule(
            name="egressgateway-for-secure",
            host=EGRESS_HOST,
            traffic_policy=TrafficPolicy(
                port_level_settings=[
                    PortTrafficPolicy(
                        port=PortSelector(number=443), tls=ClientTLSSettings(mode="ISTIO_MUTUAL", sni=SECURE)
                    )
                ]
            ),
        ),
        VirtualService(
            name="secure-via-egress",
            hosts=[SECURE],
            gateways=["istio-system/istio-egressgateway", "mesh"],
            http=[
                HTTPRoute(
                    match=[HTTPMatchRequest(gateways=["mesh"], port=80)],
                    route=[
                        HTTPRouteDestination(destination=Destination(host=EGRESS_HOST, port=PortSelector(number=443)))
                    ],
                ),
                HTTPRoute(
                    match=[HTTPMatchRequest(gateways=["istio-system/istio-egressgateway"], port=443)],
                    route=[HTTPRouteDestination(destination=Destination(host=SECURE, port=PortSelector(number=443)))],
                ),
            ],
        ),
        DestinationRule(
            name="originate-tls-for-secure",
            host=SECURE,
            traffic_policy=TrafficPolicy(
                port_level_settings=[
                    PortTrafficPolicy(
                        port=PortSelector(number=443),
                        tls=ClientTLSSettings(mode="SIMPLE", ca_certificates=str(pki.ca), sni=SECURE),
                    )
                ]
            ),
        ),
    ]
    return [
        *secure,
        ServiceEntry(name="httpbin", hosts=[HTTPBIN], ports=[http], resolution="DNS", location="MESH_EXTERNAL"),
        via_gateway,
        ServiceEntry(
            name="tls-external",
            hosts=[TLS_HOST],
            ports=[
                ServiceEntryPort(number=80, name="http", protocol="HTTP", target_port=8443),
                ServiceEntryPort(number=8081, name="http-mutual", protocol="HTTP", target_port=443),
            ],
            resolution="DNS",
        ),
        DestinationRule(
            name="tls-external",
            host=TLS_HOST,
            traffic_policy=TrafficPolicy(
                port_level_settings=[
                    PortTrafficPolicy(port=PortSelector(number=80), tls=simple),
                    PortTrafficPolicy(port=PortSelector(number=8081), tls=mutual),
                ]
            ),
        ),
        ServiceEntry(
            name="tcp-external",
            hosts=[TCP_HOST],
            ports=[ServiceEntryPort(number=8000, name="tcp", protocol="TCP")],
            resolution="STATIC",
            location="MESH_INTERNAL",
            workload_selector=WorkloadSelector(match_labels={"app": "tcp-vm"}),
        ),
        WorkloadEntry(name="tcp-vm", address=tcp_ip, workload_labels={"app": "tcp-vm"}),
        ServiceEntry(
            name="none-external",
            hosts=[NONE_HOST],
            ports=[ServiceEntryPort(number=8080, name="http-alt", protocol="HTTP")],
            resolution="NONE",
        ),
    ]


@dataclass
class World:
    mesh: LocalMeshUnderTest
    pki: Pki
    ips: dict[str, str]  # external host -> address
    egress_ip: str

    @property
    def sleep(self) -> tuple[str, str]:
        """(ip, namespace) of the client pod."""
        pod = next(p for p in self.mesh.mesh.registry.pods if p.service == "sleep")
        capture = self.mesh.mesh.capture
        assert capture is not None
        return pod.ip, capture.namespace(pod.name)

    def client(self, timeout: float = 15.0) -> PodClient:
        return PodClient(self.sleep[1], timeout=timeout)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    ok, why = netns.available()
    if not ok:
        pytest.fail(
            f"the egress tests need transparent interception: {why} (run as root; apt-get install iproute2 iptables)"
        )
    # caCertificates is a file the proxy reads itself (as uid 1337, like a file mounted into the pod)
    pki_dir = Path(tempfile.mkdtemp(prefix="meshops-egress-pki-"))
    pki_dir.chmod(0o755)
    try:
        yield from _world(make_pki(pki_dir, TLS_HOST))
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)


def _world(pki: Pki) -> Iterator[World]:
    m = LocalMeshUnderTest(
        _workloads(), interception="iptables", dns_proxy=True, outbound_traffic_policy="REGISTRY_ONLY"
    )
    try:
        capture = m.mesh.capture
        assert capture is not None and m.mesh.egress is not None
        credential = m.mesh.options.state_dir / "credentials" / "tls-client"  # MUTUAL's credentialName
        credential.mkdir(parents=True)
        for src, dst in ((pki.client_cert, "tls.crt"), (pki.client_key, "tls.key"), (pki.ca, "ca.crt")):
            (credential / dst).write_bytes(src.read_bytes())
        hosts = {h: capture.add_external(h) for h in (HTTPBIN, TLS_HOST, TCP_HOST, NONE_HOST, UNKNOWN, SECURE)}
        servers = [
            external_server(*hosts[HTTPBIN][::-1], 80),
            external_server(*hosts[UNKNOWN][::-1], 80),
            external_server(*hosts[UNKNOWN][::-1], 8000),
            external_server(*hosts[TCP_HOST][::-1], 8000),
            external_server(*hosts[NONE_HOST][::-1], 8080),
            external_server(*hosts[TLS_HOST][::-1], 8443, str(pki.server_cert), str(pki.server_key)),
            external_server(*hosts[SECURE][::-1], 443, str(pki.secure_cert), str(pki.secure_key)),
            external_server(*hosts[TLS_HOST][::-1], 443, str(pki.server_cert), str(pki.server_key), str(pki.ca)),
        ]
        with contextlib.ExitStack() as stack:
            for s in servers:
                stack.enter_context(s)
            m.apply(replace(m.config, *_entries(pki, hosts[TCP_HOST][0])))  # type: ignore[arg-type]
            yield World(m, pki, {h: ip for h, (ip, _) in hosts.items()}, m.mesh.egress.ip)
    finally:
        m.stop()


def _glibc_lookup(ns: str, name: str) -> str:
    """`name` as an app in the pod resolves it (glibc, the pod's resolv.conf; no hosts file names it)."""
    code = f"import socket; print(socket.gethostbyname({name!r}))"
    r = subprocess.run(netns.exec_argv(ns, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=20)
    return r.stdout.strip() if r.returncode == 0 else f"error: {r.stderr.strip()[-200:]}"


def _dns(ns: str, name: str) -> tuple[int, list[str]]:
    with netns.entered(ns):
        sock = __import__("socket").socket(2, 2)  # AF_INET, SOCK_DGRAM made inside the pod
    with sock:
        server = Path(netns.ETC_NETNS / ns / "resolv.conf").read_text().split()[1]
        return dns.resolve_over(sock, (server, 53), name)


def _dns_queries(world: World) -> int:
    pod = next(p for p in world.mesh.mesh.registry.pods if p.service == "sleep")
    stats = world.mesh.mesh.admin(pod).stats("downstream_rx_queries")
    assert stats, "the sidecar has no DNS filter stats"
    return sum(stats.values())


def test_the_sidecar_answers_the_pods_dns(world: World) -> None:
    """Service names get their VIP, ServiceEntry hosts an address from 240.240.0.0/16, names the mesh does not know
    go upstream (a test host gets its address, anything else NXDOMAIN): all without a hosts file."""
    _, ns = world.sleep
    assert "sleep" not in (netns.ETC_NETNS / ns / "hosts").read_text().split()
    capture = world.mesh.mesh.capture
    assert capture is not None
    vip = capture.vips["sleep.default.svc.cluster.local"]
    assert _dns(ns, "sleep.default.svc.cluster.local") == (dns.NOERROR, [vip])
    rcode, allocated = _dns(ns, HTTPBIN)
    assert rcode == dns.NOERROR and allocated and allocated[0].startswith("240.240."), allocated
    assert _dns(ns, UNKNOWN) == (dns.NOERROR, [world.ips[UNKNOWN]])
    assert _dns(ns, "nothing.external.test")[0] == dns.NXDOMAIN
    before = _dns_queries(world)
    assert _glibc_lookup(ns, "sleep") == vip  # the search domains of its namespace, then the sidecar's answer
    assert _glibc_lookup(ns, HTTPBIN) == allocated[0]
    assert _dns_queries(world) >= before + 2  # the sidecar's DNS listener answered glibc's queries


def test_egress_gateway_carries_the_external_call(world: World) -> None:
    """Istio's egress task: the sidecar sends httpbin's traffic to the egress gateway, which calls httpbin; httpbin
    sees the egress gateway's address, and the app itself only named the host."""
    r = world.client().get(f"http://{HTTPBIN}/headers")
    assert r.status == 200, r.text
    assert r.json["client"] == world.egress_ip and r.json["host"] == HTTPBIN
    ip, ns = world.sleep
    app = PodClient(ns).get(f"http://{ip}:9080/")  # the sample app's own call, resolved by glibc in the pod
    call = app.call(HTTPBIN)
    assert call["status"] == 200 and call["body"]["client"] == world.egress_ip, call


def test_egress_gateway_with_mtls_from_the_sidecar_and_tls_originated_at_the_gateway(world: World) -> None:
    """Istio's egress TLS origination task: the app calls http://secure.external.test; its sidecar opens mTLS to the
    egress gateway (ISTIO_MUTUAL, SNI the host), which originates TLS to the HTTPS-only host (SIMPLE)."""
    egress = world.mesh.mesh.egress
    assert egress is not None
    handshakes = _gateway_handshakes(world)
    r = world.client().get(f"http://{SECURE}/")
    assert r.status == 200, r.text
    assert r.json["client"] == world.egress_ip and r.json["host"] == SECURE
    assert _gateway_handshakes(world) > handshakes  # the sidecar-to-gateway hop was TLS (mesh mTLS)


def _gateway_handshakes(world: World) -> int:
    egress = world.mesh.mesh.egress
    assert egress is not None
    stats = world.mesh.mesh.admin(egress).stats("ssl.handshake")
    return sum(v for k, v in stats.items() if k.startswith("listener.") and "_443." in k)


def test_registry_only_blocks_hosts_no_service_entry_names(world: World) -> None:
    """unknown.external.test resolves (it exists in the test world) but the mesh does not know it: its HTTP call
    meets the block_all catch-all (502) and a TCP connection goes to the BlackHoleCluster."""
    r = world.client().get(f"http://{UNKNOWN}/")
    assert r.status == 502, r.text
    with pytest.raises(OSError):
        world.client(timeout=5).get(f"http://{UNKNOWN}:8000/")


def test_static_entry_over_a_workload_entry_and_a_tcp_port(world: World) -> None:
    """tcp.external.test: STATIC, its one endpoint a WorkloadEntry; TCP port 8000 on its allocated address is
    proxied by the sidecar (the server sees the pod's own address, not a gateway's)."""
    r = world.client().get(f"http://{TCP_HOST}:8000/")
    assert r.status == 200, r.text
    assert r.json["client"] == world.sleep[0]


def test_resolution_none_passes_to_the_original_destination(world: World) -> None:
    r = world.client().get(f"http://{NONE_HOST}:8080/")
    assert r.status == 200, r.text
    assert r.json["host"] == f"{NONE_HOST}:8080"


def test_tls_origination_simple_and_mutual(world: World) -> None:
    """The app calls plain http://tls.external.test; its sidecar originates TLS. Port 80 (SIMPLE, to 8443): the
    server is verified against the test CA and its SAN, no client certificate. Port 8081 (MUTUAL with a
    credentialName, to 443, where the server requires a client certificate): the test client's is presented."""
    simple = world.client().get(f"http://{TLS_HOST}/")
    assert simple.status == 200, simple.text
    assert simple.json["client_cert"] is None and simple.json["host"] == TLS_HOST
    mutual = world.client().get(f"http://{TLS_HOST}:8081/")
    assert mutual.status == 200, mutual.text
    assert mutual.json["client_cert"] == "mesh-client"


def test_tls_origination_refuses_a_server_whose_name_does_not_match(world: World) -> None:
    """subjectAltNames is checked: the same server under a SAN it does not carry is refused (503)."""
    original = world.mesh.config
    world.mesh.apply(replace(original, *_entries(world.pki, world.ips[TCP_HOST], "wrong.example")))  # type: ignore[arg-type]
    try:
        r = world.client().get(f"http://{TLS_HOST}/")
        assert r.status == 503, r.text
    finally:
        world.mesh.apply(original)
