"""ACME from `mesh up`: an `Issuer` referenced by a Gateway (`cert-manager.io/issuer`) makes the running local mesh
obtain its credential from a real ACME server (pebble) itself, answering HTTP-01 through its edge, serving the
certificate at the gateway over SDS, renewing it under load with no failed request, keeping it when the ACME server
is down, and reporting all of it in `mesh status`."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from mesh.api import AcmeIssuerSpec, Issuer, Resource
from mesh.api.config import MeshConfig
from mesh.api.issuer import ISSUER_ANNOTATION
from mesh.api.networking import Gateway, Port, Server, ServerTLSSettings
from mesh.compile import build_policies
from mesh.dataplane.addresses import LoopbackBlock, allocate_block
from mesh.edge.testing import Load, free_port
from mesh.errors import TargetError
from mesh.targets.local import LocalMesh, LocalOptions

from .conftest import Pebble

pytestmark = pytest.mark.e2e

HOST = "bookinfo.local"
CREDENTIAL = "bookinfo-acme"


@pytest.fixture
def block() -> LoopbackBlock:
    return allocate_block()


@pytest.fixture
def acme_dns_ip(block: LoopbackBlock) -> str:
    return block.gateway_ip  # pebble validates HTTP-01 at the mesh's ingress address ...


@pytest.fixture
def acme_http_port() -> int:
    return free_port()  # ... on the ingress port (the edge's plain-HTTP listener)


def _policies(pebble: Pebble, **spec: str) -> MeshConfig:
    """The e2e policies with an HTTPS server for HOST whose credential comes from pebble."""
    base = build_policies("e2e")
    acme = AcmeIssuerSpec(
        server=pebble.directory_url, email="ops@bookinfo.local", ca_bundle=str(pebble.ca_bundle), **spec
    )
    issuer = Issuer(name="pebble", namespace="default", acme=acme)
    out: list[Resource] = [issuer]
    for r in base.resources:
        if isinstance(r, Gateway) and r.name == "bookinfo":
            https = Server(
                port=Port(number=443, name="https", protocol="HTTPS"),
                hosts=[HOST],
                tls=ServerTLSSettings(mode="SIMPLE", credential_name=CREDENTIAL),
            )
            r = r.model_copy(update={"servers": [*r.servers, https], "annotations": {ISSUER_ANNOTATION: "pebble"}})
        out.append(r)
    return MeshConfig(services=list(base.services), resources=out)


def _options(root: pytest.TempPathFactory, block: LoopbackBlock, pebble: Pebble) -> LocalOptions:
    """The state dir is deliberately deep (HAProxy refuses socket paths over 97 bytes): the mesh must keep the
    edge's sockets in its own short directory, whatever the depth of the state directory a user chose."""
    return LocalOptions(
        state_dir=root.mktemp("acme") / ("deep" * 20) / "state",
        ingress_host=block.gateway_ip,
        ingress_port=pebble.http_port,
        ingress_https_port=free_port(),
        loopback_block=block.b,
        edge="haproxy",
        gateway_replicas=2,
    )


@pytest.fixture
def mesh(
    tmp_path_factory: pytest.TempPathFactory, block: LoopbackBlock, pebble: Pebble, haproxy: str
) -> Iterator[LocalMesh]:
    lm = LocalMesh(_policies(pebble), _options(tmp_path_factory, block, pebble), progress=lambda m: None)
    try:
        lm.start()
        yield lm
    finally:
        lm.stop()


def _served(address: tuple[str, int], cafile: Path) -> x509.Certificate:
    """The certificate the gateway presents for HOST, verified against pebble's root."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(address, timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _until_served(address: tuple[str, int], cafile: Path, changed_from: int, timeout: float = 15.0) -> x509.Certificate:
    deadline = time.monotonic() + timeout
    while True:
        cert = _served(address, cafile)
        if cert.serial_number != changed_from or time.monotonic() > deadline:
            return cert
        time.sleep(0.05)


def test_mesh_up_obtains_serves_renews_and_reports_an_acme_certificate(
    mesh: LocalMesh, pebble: Pebble, tmp_path: Path
) -> None:
    lm = mesh
    assert lm.edge is not None and lm.acme is not None
    edge_address = lm.edge.url().split("//")[1]
    assert all(f"{g.listen[80][0]}:{g.listen[80][1]}" != edge_address for g in lm.gateways)  # nothing beside the edge
    (status,) = lm.describe().acme
    assert (status.name, status.hosts, status.ready, status.error) == (CREDENTIAL, [HOST], True, None), status
    assert status.issuer == "default-pebble" and status.not_after is not None

    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    assert lm.gateway is not None
    address = lm.gateway.listen[443]
    first = _served(address, root)  # pebble's certificate, through SDS: verified against pebble's root
    san = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [HOST]

    # renewal under load over HTTPS through the gateway: a new certificate reaches it, no request fails
    url = f"https://{address[0]}:{address[1]}/productpage"
    with Load(url, workers=3, verify=str(root), sni=HOST, headers={"Host": HOST}) as load:
        load.wait_for(50)
        renewed = lm.acme.renew(CREDENTIAL)
        after = _until_served(address, root, first.serial_number)
        load.wait_for(50)
    assert renewed.error is None and renewed.issued == 2, renewed
    assert after.serial_number != first.serial_number
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])

    # the ACME server goes away: the renewal fails, is reported, and the renewed certificate keeps serving
    pebble.stop()
    failed = lm.acme.renew(CREDENTIAL)
    assert failed.error is not None and failed.ready, failed
    (reported,) = lm.describe().acme
    assert reported.error == failed.error and reported.ready and reported.last_success == renewed.last_success
    assert _served(address, root).serial_number == after.serial_number

    # `mesh apply` without the annotation: the renewals stop; the credential's files keep serving as any credential
    plain = [
        r.model_copy(update={"annotations": {}}) if isinstance(r, Gateway) and r.name == "bookinfo" else r
        for r in lm.config.resources
    ]
    lm.apply(MeshConfig(services=list(lm.config.services), resources=plain))
    assert lm.acme is None
    assert _served(address, root).serial_number == after.serial_number


def test_an_issuer_without_the_edge_is_refused_before_anything_starts(tmp_path: Path, pebble: Pebble) -> None:
    lm = LocalMesh(_policies(pebble), LocalOptions(state_dir=tmp_path / "state"), progress=lambda m: None)
    with pytest.raises(TargetError, match="through its edge, and no edge runs") as e:
        lm.start()
    assert "--edge haproxy" in str(e.value)
    assert not lm.supervisor.status()


def test_the_mesh_renews_by_itself_once_a_certificate_falls_due(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, block: LoopbackBlock, pebble: Pebble, haproxy: str
) -> None:
    """renewBefore longer than pebble's certificates live: every certificate is due as soon as it is issued, so the
    background renewal orders a new one every retryInterval and pushes it: the gateway serves a new serial with
    nobody asking."""
    lm = LocalMesh(
        _policies(pebble, renew_before="100000h", retry_interval="1s"),
        _options(tmp_path_factory, block, pebble),
        progress=lambda m: None,
    )
    try:
        lm.start()
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        assert lm.gateway is not None
        address = lm.gateway.listen[443]
        first = _served(address, root)
        renewed = _until_served(address, root, first.serial_number, timeout=20.0)
        assert renewed.serial_number != first.serial_number, "no renewal reached the gateway within 20 s"
        (status,) = lm.describe().acme
        assert status.error is None and status.ready
    finally:
        lm.stop()
