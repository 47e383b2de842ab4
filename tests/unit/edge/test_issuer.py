"""Which gateway credentials come from which ACME issuer (cert-manager's `cert-manager.io/issuer` convention), and
when the renewal loop wakes up (no ACME server: a stand-in for certbot's client answers like one)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.api import AcmeIssuerSpec, Issuer
from mesh.api.config import MeshConfig
from mesh.api.issuer import ISSUER_ANNOTATION, issued_credentials
from mesh.api.networking import Gateway, Port, Server, ServerTLSSettings
from mesh.compile.render import render_istio
from mesh.controlplane.ca.acme import AcmeCertificates, AcmeIssuer
from mesh.controlplane.ca.acme_renewal import MIN_WAIT, AcmeCredential, AcmeRenewal
from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.errors import PolicyError

SPEC = AcmeIssuerSpec(server="https://acme.example/dir")


def _gateway(hosts: list[str], issuer: str | None = "le", credential: str = "web-cert") -> Gateway:
    servers = [
        Server(port=Port(number=80, name="http", protocol="HTTP"), hosts=hosts),
        Server(
            port=Port(number=443, name="https", protocol="HTTPS"),
            hosts=[f"./{hosts[0]}", *hosts[1:]],
            tls=ServerTLSSettings(mode="SIMPLE", credential_name=credential),
        ),
    ]
    notes = {ISSUER_ANNOTATION: issuer} if issuer else {}
    return Gateway(name="gw", namespace="shop", servers=servers, annotations=notes)


def test_an_annotated_gateways_tls_credentials_come_from_its_issuer_for_their_hosts() -> None:
    le = Issuer(name="le", namespace="shop", acme=SPEC)
    plan = issued_credentials([_gateway(["a.example", "b.example"])], [le])
    assert plan == {"web-cert": (le, ["a.example", "b.example"])}  # the namespace prefix `./` is not a host
    assert issued_credentials([_gateway(["a.example"], issuer=None)], [le]) == {}  # not annotated: files or the CA


def test_a_missing_issuer_or_a_wildcard_host_is_refused_by_name() -> None:
    with pytest.raises(PolicyError, match=r"names issuer 'le'.*no Issuer shop/le"):
        issued_credentials([_gateway(["a.example"])], [Issuer(name="le", namespace="other", acme=SPEC)])
    with pytest.raises(PolicyError, match="cannot prove a wildcard name"):
        issued_credentials([_gateway(["*.example"])], [Issuer(name="le", namespace="shop", acme=SPEC)])


def test_issuer_spec_is_checked_and_renders_to_nothing_for_kubernetes() -> None:
    with pytest.raises(ValidationError):
        AcmeIssuerSpec(server="http://plain.example/dir")  # ACME is HTTPS only
    with pytest.raises(ValidationError, match="positive duration"):
        AcmeIssuerSpec(server="https://a/dir", renew_before="0s")
    assert render_istio(MeshConfig(resources=[Issuer(name="le", acme=SPEC)])) == []  # cert-manager's job there


class _NoResponder:
    def present(self, token: str, key_authorization: str) -> None: ...

    def cleanup(self, token: str) -> None: ...


class _Certificates(AcmeCertificates):
    """Orders answered by the mesh CA instead of an ACME server: the renewal loop's scheduling, isolated."""

    def __init__(self, tmp: Path, lifetime: dt.timedelta, fail: bool = False) -> None:
        issuer = AcmeIssuer(
            name="t", directory_url="https://acme.invalid/dir", account_key=tmp / "k.pem", renew_before="10s"
        )
        super().__init__(issuer, tmp / "creds", _NoResponder())
        self.ca = CertificateAuthority(workload_ttl=lifetime)
        self.fail = fail

    def _order(self, name: str, hosts: list[str]) -> None:
        if self.fail:
            raise ConnectionError("ACME server down")
        cert = self.ca.issue_server(tuple(hosts))
        self._store(name, cert.cert_chain_pem, cert.key_pem)


def test_renewal_wakes_when_the_certificate_falls_due_and_retries_failures_soon(tmp_path: Path) -> None:
    issued: list[str] = []
    certs = _Certificates(tmp_path, dt.timedelta(days=1))
    renewal = AcmeRenewal([AcmeCredential("web-cert", ("a.example",), certs)], issued.append)
    wait = renewal.run_once()
    assert issued == ["web-cert"]  # obtained, handed on to be pushed
    assert 0 < wait <= 300.0  # never sleeps past MAX_WAIT, however far the renewal is
    assert renewal.run_once() <= 300.0 and issued == ["web-cert"]  # not due: no new order, nothing pushed
    renewal.renew("web-cert")
    assert issued == ["web-cert", "web-cert"]  # a forced renewal is pushed too

    down = _Certificates(tmp_path / "down", dt.timedelta(days=1), fail=True)
    failing = AcmeRenewal([AcmeCredential("web-cert", ("a.example",), down)], issued.append)
    assert failing.run_once() == max(MIN_WAIT, 30.0)  # the issuer's retry_interval
    st = down.status("web-cert")
    assert st is not None and st.error == "ConnectionError: ACME server down" and not st.ready
