"""TCP and TLS through the mesh, as Istio routes them (transparent interception): connections split by weight,
routed by SNI, refused by STRICT mTLS and network RBAC; at the gateway TCP servers, SNI passthrough to an app that
terminates TLS itself, and AUTO_PASSTHROUGH for callers that bring their own mesh mTLS.

The split is measured per connection with a sequential test (mesh.verify.stats): a correct mesh fails with
probability <= 1e-6, a split off by 5 points or more passes with probability <= 0.01."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.api import (
    AuthorizationPolicy,
    Destination,
    Gateway,
    L4MatchAttributes,
    MeshConfig,
    Operation,
    Port,
    PortSelector,
    RouteDestination,
    Rule,
    RuleFrom,
    RuleTo,
    Server,
    ServerTLSSettings,
    Service,
    ServicePort,
    Source,
    TCPRoute,
    TLSMatchAttributes,
    TLSRoute,
    Version,
    VirtualService,
    WorkloadSelector,
)
from mesh.api import helpers as h
from mesh.cli.proxyconfig import show
from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.simulate import explain, simulate
from mesh.dataplane import netns
from mesh.harness.stats import assert_sequential_split
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.targets.local.podclient import hosts_file
from policies.testbed import tcp_echo, tcp_echo_policies
from policies.workloads import APP, IMAGE

from ..conftest import replace

pytestmark = pytest.mark.e2e

SECURE_NAMES = ("secure.example", "v2.secure.example")
TCP_GATEWAY_PORT = 31400
PASSTHROUGH_PORT = 9443
AUTO_PASSTHROUGH_PORT = 15443
ECHO = "tcp-echo.default.svc.cluster.local"


def _dest(host: str, subset: str | None = None, port: int | None = None, weight: int | None = None) -> RouteDestination:
    d = Destination(host=host, subset=subset, port=PortSelector(number=port) if port else None)
    return RouteDestination(destination=d, weight=weight)


def _secure(cert: Path, key: Path) -> Service:
    """An HTTPS app that terminates TLS itself with its own certificate (not the mesh's)."""
    command = [*APP, "--tls-cert", str(cert), "--tls-key", str(key)]
    return Service(
        name="secure",
        ports=[ServicePort(number=8443, name="https")],
        versions=[Version(name="v1", command=command, image=IMAGE), Version(name="v2", command=command, image=IMAGE)],
    )


def _l4_config(base: MeshConfig, secure: Service) -> MeshConfig:
    gateway = Gateway(
        name="l4-gateway",
        selector={"istio": "ingressgateway"},
        servers=[
            Server(port=Port(number=TCP_GATEWAY_PORT, name="tcp", protocol="TCP"), hosts=["*"]),
            Server(
                port=Port(number=PASSTHROUGH_PORT, name="tls", protocol="TLS"),
                hosts=["secure.example"],
                tls=ServerTLSSettings(mode="PASSTHROUGH"),
            ),
            Server(
                port=Port(number=AUTO_PASSTHROUGH_PORT, name="tls-auto", protocol="TLS"),
                hosts=["*.local"],
                tls=ServerTLSSettings(mode="AUTO_PASSTHROUGH"),
            ),
        ],
    )
    secure_routes = VirtualService(
        name="secure",
        hosts=["secure", "secure.example"],
        gateways=["mesh", "l4-gateway"],
        tls=[
            # sidecars: SNI v2.secure.example -> v2; the gateway: secure.example -> v1, the app's own TLS
            TLSRoute(
                match=[TLSMatchAttributes(sni_hosts=["v2.secure.example"], gateways=["mesh"])],
                route=[_dest("secure", "v2")],
            ),
            TLSRoute(
                match=[
                    TLSMatchAttributes(sni_hosts=["secure.example"], port=PASSTHROUGH_PORT, gateways=["l4-gateway"])
                ],
                route=[_dest("secure", "v1", port=8443)],
            ),
        ],
        tcp=[TCPRoute(match=[L4MatchAttributes(gateways=["mesh"])], route=[_dest("secure", "v1")])],
    )
    tcp_gateway = VirtualService(
        name="tcp-echo-gateway",
        hosts=["*"],
        gateways=["l4-gateway"],
        tcp=[TCPRoute(match=[L4MatchAttributes(port=TCP_GATEWAY_PORT)], route=[_dest("tcp-echo", "v2", port=9000)])],
    )
    return MeshConfig(
        services=[*base.services, tcp_echo, secure],
        resources=[
            *base.resources,
            *tcp_echo_policies(v2_weight=20),
            h.subsets_by_version(secure),
            gateway,
            secure_routes,
            tcp_gateway,
        ],
    )


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[Path, Path, Path]]:
    """(CA, cert, key) of the secure app's own certificate, made for this run (not the mesh's CA)."""
    ca = CertificateAuthority()
    leaf = ca.issue_server(SECURE_NAMES)
    with tempfile.TemporaryDirectory(prefix="meshops-tls-") as d:
        root = Path(d)
        (root / "ca.pem").write_bytes(ca.root_pem)
        (root / "cert.pem").write_bytes(leaf.cert_chain_pem)
        (root / "key.pem").write_bytes(leaf.key_pem)
        (root / "key.pem").chmod(0o600)
        yield root / "ca.pem", root / "cert.pem", root / "key.pem"


@pytest.fixture(scope="module")
def l4(mesh_config: MeshConfig, certs: tuple[Path, Path, Path]) -> Iterator[LocalMeshUnderTest]:
    ok, why = netns.available()
    if not ok:
        pytest.fail(
            f"TCP routing needs transparent interception: {why} (run as root; apt-get install iproute2 iptables)"
        )
    _, cert, key = certs
    m = LocalMeshUnderTest(_l4_config(mesh_config, _secure(cert, key)), interception="iptables")
    try:
        yield m
    finally:
        m.stop()


# --- helpers --------------------------------------------------------------------------------------------------


def _ns(m: LocalMeshUnderTest, service: str) -> str:
    pod = next(p for p in m.mesh.registry.pods if p.service == service)
    assert m.mesh.capture is not None
    return m.mesh.capture.namespace(pod.name)


def _pod_ip(m: LocalMeshUnderTest, service: str) -> str:
    return next(p.ip for p in m.mesh.registry.pods if p.service == service)


def _exchange(sock: socket.socket, line: str) -> str:
    """Send one line, read one line back ('' when the peer closed or reset the connection instead)."""
    data = b""
    with sock:
        try:
            sock.sendall(line.encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            return ""
    return data.decode().strip()


def _echo_from(m: LocalMeshUnderTest, client: str, host: str = "tcp-echo", port: int = 9000) -> str:
    """One fresh connection from `client`'s pod (its app's view: the name resolves to the VIP), one line."""
    ns = _ns(m, client)
    return _exchange(netns.connect_in(ns, hosts_file(ns).get(host, host), port, 10.0), "hello")


def _stat(m: LocalMeshUnderTest, service: str, name: str) -> int:
    pod = next(p for p in m.mesh.registry.pods if p.service == service)
    return m.mesh.admin(pod).stats(name.replace(".", r"\.").replace("|", r"\|")).get(name, 0)


def _tls_client(ca: Path | bytes, sni: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = (
        ssl.create_default_context(cafile=str(ca))
        if isinstance(ca, Path)
        else ssl.create_default_context(cadata=ca.decode())
    )
    ctx.check_hostname = not sni.startswith("outbound_.")
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


# --- sidecars -------------------------------------------------------------------------------------------------


def test_a_tcp_connection_reaches_the_service_through_both_sidecars(l4: LocalMeshUnderTest) -> None:
    before = _stat(l4, "productpage", "cluster.outbound|9000|v1|tcp-echo.default.svc.cluster.local.upstream_cx_total")
    reply = _echo_from(l4, "productpage")
    assert reply.split()[0] in ("v1", "v2") and reply.endswith("hello"), reply
    # the client's sidecar proxied it (tcp_proxy over mTLS), not the kernel
    after = sum(
        _stat(l4, "productpage", f"cluster.outbound|9000|{v}|tcp-echo.default.svc.cluster.local.upstream_cx_total")
        for v in ("v1", "v2")
    )
    assert after > before


def test_tcp_weighted_split_is_per_connection(l4: LocalMeshUnderTest) -> None:
    """80/20 by VirtualService.tcp weights: every connection is one draw (tcp_proxy weighted_clusters)."""
    assert_sequential_split(lambda: _echo_from(l4, "productpage").split()[0], {"v1": 80, "v2": 20})


def test_tcp_reweighting_applies_to_new_connections(l4: LocalMeshUnderTest) -> None:
    original = l4.config
    l4.apply(replace(original, *tcp_echo_policies(v2_weight=100)))
    try:
        assert {_echo_from(l4, "productpage").split()[0] for _ in range(20)} == {"v2"}
    finally:
        l4.apply(original)


def test_strict_mtls_refuses_a_plaintext_tcp_connection(l4: LocalMeshUnderTest) -> None:
    """A plaintext connection straight to a tcp-echo pod (its address, not the service) is captured by the
    caller's sidecar and passed through as plaintext; tcp-echo's sidecar under STRICT closes it unanswered."""
    ip = _pod_ip(l4, "tcp-echo")
    refused = _stat(l4, "tcp-echo", "listener.0.0.0.0_15006.no_filter_chain_match")
    ns = _ns(l4, "productpage")
    assert _exchange(netns.connect_in(ns, ip, 9000, 10.0), "hello") == ""
    assert _stat(l4, "tcp-echo", "listener.0.0.0.0_15006.no_filter_chain_match") > refused


def test_authorization_for_tcp_principals_and_http_only_fields(l4: LocalMeshUnderTest) -> None:
    """Network RBAC: only productpage's identity may connect (reviews' connection is closed); an ALLOW rule that
    names HTTP methods matches no TCP connection, as in Istio, so then even productpage is refused."""
    original = l4.config
    principal = "cluster.local/ns/default/sa/productpage"
    allow = AuthorizationPolicy(
        name="tcp-echo-allow",
        selector=WorkloadSelector(match_labels={"app": "tcp-echo"}),
        rules=[
            Rule(
                from_=[RuleFrom(source=Source(principals=[principal]))],
                to=[RuleTo(operation=Operation(ports=["9000"]))],
            )
        ],
    )
    try:
        l4.apply(replace(original, allow))
        assert _echo_from(l4, "productpage").endswith("hello")
        assert _echo_from(l4, "reviews") == ""
        http_only = allow.model_copy(deep=True)
        http_only.rules[0].to = [RuleTo(operation=Operation(methods=["GET"]))]
        l4.apply(replace(original, http_only))
        assert _echo_from(l4, "productpage") == ""
    finally:
        l4.apply(original)
    assert _echo_from(l4, "reviews").endswith("hello")


def test_sidecar_routes_tls_by_sni_without_terminating_it(
    l4: LocalMeshUnderTest, certs: tuple[Path, Path, Path]
) -> None:
    """VirtualService.tls on sidecars: SNI v2.secure.example goes to v2, any other SNI takes the tcp rule (v1).
    The client verifies the app's own certificate: the sidecars passed its TLS through."""
    ca, _, _ = certs
    ns = _ns(l4, "productpage")
    vip = hosts_file(ns)["secure"]
    for sni, version in (("v2.secure.example", "v2"), ("secure.example", "v1")):
        raw = netns.connect_in(ns, vip, 8443, 10.0)
        with _tls_client(ca, sni).wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(f"GET /sni HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            body = b""
            while chunk := tls.recv(65536):
                body += chunk
        assert b" 200 " in body.split(b"\r\n", 1)[0], body[:200]
        assert f'"version": "{version}"'.encode() in body, (sni, body[-300:])


# --- gateway --------------------------------------------------------------------------------------------------


def _gateway(l4: LocalMeshUnderTest, port: int) -> tuple[str, int]:
    gw = l4.mesh.gateway
    assert gw is not None
    return gw.listen[port]


def test_gateway_tcp_server_routes_connections(l4: LocalMeshUnderTest) -> None:
    reply = _exchange(socket.create_connection(_gateway(l4, TCP_GATEWAY_PORT), timeout=10), "via gateway")
    assert reply.startswith("v2 ") and reply.endswith("via gateway"), reply


def test_gateway_passthrough_by_sni_shows_the_apps_certificate(
    l4: LocalMeshUnderTest, certs: tuple[Path, Path, Path]
) -> None:
    """PASSTHROUGH: the gateway reads only the SNI; the client completes TLS with the app, verifying the app's
    certificate (issued by the test's own CA, which neither the gateway nor the mesh holds)."""
    ca, cert, _ = certs
    raw = socket.create_connection(_gateway(l4, PASSTHROUGH_PORT), timeout=10)
    with _tls_client(ca, "secure.example").wrap_socket(raw, server_hostname="secure.example") as tls:
        seen = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET /passthrough HTTP/1.1\r\nHost: secure.example\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := tls.recv(65536):
            body += chunk
    assert seen == ssl.PEM_cert_to_DER_cert(
        cert.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )
    assert b'"service": "secure"' in body and b'"version": "v1"' in body, body[-300:]


def test_gateway_passthrough_refuses_an_unknown_sni(l4: LocalMeshUnderTest, certs: tuple[Path, Path, Path]) -> None:
    ca, _, _ = certs
    with socket.create_connection(_gateway(l4, PASSTHROUGH_PORT), timeout=10) as raw, pytest.raises(OSError):
        _tls_client(ca, "other.example").wrap_socket(raw, server_hostname="other.example")


def test_gateway_auto_passthrough_carries_the_callers_mesh_mtls(l4: LocalMeshUnderTest) -> None:
    """AUTO_PASSTHROUGH: a caller with a mesh identity (as a sidecar in another network would be) names the
    cluster in its SNI; the gateway forwards its mTLS untouched to tcp-echo v1's sidecar, which checks it."""
    svid = l4.mesh.ca.issue("spiffe://cluster.local/ns/default/sa/productpage")
    with tempfile.TemporaryDirectory() as d:
        chain, key = Path(d) / "chain.pem", Path(d) / "key.pem"
        chain.write_bytes(svid.cert_chain_pem)
        key.write_bytes(svid.key_pem)
        ctx = _tls_client(l4.mesh.ca.root_pem, "outbound_.", alpn=["istio"])
        ctx.load_cert_chain(chain, key)
    sni = "outbound_.9000_.v1_.tcp-echo.default.svc.cluster.local"
    raw = socket.create_connection(_gateway(l4, AUTO_PASSTHROUGH_PORT), timeout=10)
    reply = _exchange(ctx.wrap_socket(raw, server_hostname=sni), "east-west")
    assert reply.startswith("v1 ") and reply.endswith("east-west"), reply


def test_proxy_config_shows_where_tcp_listeners_send_connections(l4: LocalMeshUnderTest) -> None:
    pod = next(p for p in l4.mesh.registry.pods if p.service == "productpage")
    vip = hosts_file(_ns(l4, "productpage"))["tcp-echo"]
    listeners = show("listeners", l4.mesh.admin_address(pod), "table")
    row = next(line for line in listeners.splitlines() if line.startswith(f"{vip}_9000"))
    assert f"outbound|9000|v1|{ECHO}:80+outbound|9000|v2|{ECHO}:20" in row, row


def test_simulate_follows_a_tcp_connection(l4: LocalMeshUnderTest) -> None:
    lines = explain(simulate(l4.config, "reviews", "tcp://tcp-echo:9000", {}))
    assert lines[0] == "TCP connection to tcp-echo:9000 from reviews-v1-0.default"
    assert f"  cluster:      outbound|9000|v2|{ECHO}  (weight 20)" in lines
