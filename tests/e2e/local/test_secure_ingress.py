"""Secure ingress on the local gateway: SIMPLE and MUTUAL TLS by SNI, HTTPS redirects (Istio's secure-ingress task).

Local-only: certificates come from the local credential store / mesh CA (on Kubernetes they are Secrets)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from cryptography.hazmat.primitives import serialization

from mesh.api import Gateway, MeshConfig, Port, Server, ServerTLSSettings, VirtualService
from mesh.harness.under_test import LocalMeshUnderTest

from ..conftest import replace


def secured(config: MeshConfig) -> MeshConfig:
    gw = Gateway(
        name="bookinfo",
        selector={"istio": "ingressgateway"},
        servers=[
            Server(
                port=Port(number=80, name="http", protocol="HTTP"),
                hosts=["bookinfo.local"],
                tls=ServerTLSSettings(https_redirect=True),
            ),
            Server(port=Port(number=80, name="http-local", protocol="HTTP"), hosts=["localhost"]),
            Server(
                port=Port(number=443, name="https", protocol="HTTPS"),
                hosts=["bookinfo.local"],
                tls=ServerTLSSettings(mode="SIMPLE", credential_name="bookinfo-cert"),
            ),
            Server(
                port=Port(number=443, name="https-partner", protocol="HTTPS"),
                hosts=["partner.local"],
                tls=ServerTLSSettings(mode="MUTUAL", credential_name="partner-cert"),
            ),
        ],
    )
    base = next(v for v in config.virtual_services if v.name == "bookinfo")
    vs = VirtualService.model_validate({**base.model_dump(), "hosts": ["bookinfo.local", "localhost", "partner.local"]})
    return replace(config, gw, vs)


def _pool(mesh: LocalMeshUnderTest, sni: str, cert: tuple[str, str] | None = None) -> urllib3.HTTPSConnectionPool:
    host, port = mesh.mesh.ingress_https_url.removeprefix("https://").split(":")
    return urllib3.HTTPSConnectionPool(
        host,
        int(port),
        server_hostname=sni,
        assert_hostname=sni,
        ca_certs=str(mesh.mesh.options.state_dir / "ca.crt"),
        cert_reqs="CERT_REQUIRED",
        retries=False,
        cert_file=cert[0] if cert else None,
        key_file=cert[1] if cert else None,
    )


def test_simple_tls_terminates_at_the_gateway(
    mesh: LocalMeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    mesh_policies(secured(mesh.config))
    r = _pool(mesh, "bookinfo.local").request("GET", "/productpage", headers={"Host": "bookinfo.local"})
    assert r.status == 200 and b'"productpage"' in r.data


def test_http_redirects_to_https_where_asked(
    mesh: LocalMeshUnderTest, mesh_policies: Callable[[MeshConfig], None]
) -> None:
    mesh_policies(secured(mesh.config))
    r = mesh.ingress("bookinfo.local").get("/productpage")
    assert r.status == 301 and r.headers["location"].startswith("https://bookinfo.local")
    assert mesh.ingress("localhost").get("/productpage").status == 200  # that server did not ask for it


def test_mutual_tls_requires_a_client_certificate(
    mesh: LocalMeshUnderTest, mesh_policies: Callable[[MeshConfig], None], tmp_path: Path
) -> None:
    mesh_policies(secured(mesh.config))
    with pytest.raises((urllib3.exceptions.SSLError, urllib3.exceptions.ProtocolError, ssl.SSLError)):
        _pool(mesh, "partner.local").request("GET", "/productpage", headers={"Host": "partner.local"})
    client = mesh.mesh.ca.issue("spiffe://cluster.local/ns/partners/sa/acme")
    (tmp_path / "c.pem").write_bytes(client.cert_chain_pem)
    key = serialization.load_pem_private_key(client.key_pem, None)
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pool = _pool(mesh, "partner.local", (str(tmp_path / "c.pem"), str(tmp_path / "k.pem")))
    r = pool.request("GET", "/productpage", headers={"Host": "partner.local"})
    assert r.status == 200
