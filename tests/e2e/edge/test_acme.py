"""A gateway credential from a real ACME server (pebble): HTTP-01 answered by the edge, HTTPS served with the
certificate, a forced renewal under load with no failed request, and failures that keep the old certificate."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from mesh.api.edge import Edge, EdgeListener, EdgeTLS
from mesh.controlplane.ca.acme import AcmeCertificates, AcmeIssuer
from mesh.edge import EdgeTier
from mesh.edge.testing import Gateways, Load, free_port
from mesh.edge.tier import EdgeChallenges

from .conftest import Pebble

pytestmark = pytest.mark.e2e

HOST = "edge.test"


def _served_certificate(port: int, cafile: Path) -> x509.Certificate:
    """The certificate the edge presents for HOST, verified against pebble's root."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


class Silent:
    """A responder that never answers: the challenge fails."""

    def present(self, token: str, key_authorization: str) -> None:
        pass

    def cleanup(self, token: str) -> None:
        pass


def test_certificate_from_acme_served_renewed_under_load_and_kept_on_failure(
    tmp_path: Path, replicas: Gateways, pebble: Pebble
) -> None:
    creds = tmp_path / "credentials"
    http = EdgeListener(name="http", port=pebble.http_port)
    edge = Edge(name="edge", listeners=[http])
    with EdgeTier(edge, replicas.replicas, tmp_path / "edge", creds) as tier:
        issuer = AcmeIssuer(
            name="pebble",
            directory_url=pebble.directory_url,
            email="ops@edge.test",
            account_key=tmp_path / "account.pem",
            ca_bundle=pebble.ca_bundle,
        )
        certs = AcmeCertificates(issuer, creds, EdgeChallenges(tier))
        first = certs.ensure("acme-cert", [HOST])
        assert first.error is None and first.ready and first.issued == 1, first
        assert (tmp_path / "account.pem").stat().st_mode & 0o777 == 0o600
        assert (creds / "acme-cert" / "tls.key").stat().st_mode & 0o777 == 0o600
        assert not certs.due("acme-cert")  # pebble's certificates live years; 30 days before is far away

        https_port = free_port()
        tier.apply(
            edge.model_copy(
                update={
                    "listeners": [
                        http,
                        EdgeListener(name="https", port=https_port, tls=EdgeTLS(credential="acme-cert")),
                    ]
                }
            )
        )
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        served = _served_certificate(https_port, root)
        san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [HOST]

        # a forced renewal under load: a new certificate, and every request answered
        with Load(f"https://127.0.0.1:{https_port}/", workers=3, verify=str(root), sni=HOST) as load:
            load.wait_for(100)
            renewed = certs.ensure("acme-cert", [HOST], force=True)
            tier.refresh_certificates()
            load.wait_for(100)
        assert renewed.error is None and renewed.issued == 2
        assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
        after = _served_certificate(https_port, root)
        assert after.serial_number != served.serial_number

        # the challenge fails: reported, and the renewed certificate stays in place. A fresh account: pebble reuses an
        # account's valid authorization on 1 order in 100 even with PEBBLE_AUTHZREUSE=0 (its roll is `Intn(100) >
        # percent`), which validated this order without a challenge and failed the test
        fresh_account = issuer.model_copy(update={"account_key": tmp_path / "account-2.pem"})
        failing = AcmeCertificates(fresh_account, creds, Silent())
        st = failing.ensure("acme-cert", [HOST], force=True)
        assert st.error is not None and st.ready, st
        assert st.last_success == renewed.last_success
        # the ACME server is down: reported likewise
        pebble.stop()
        down = AcmeCertificates(issuer, creds, EdgeChallenges(tier)).ensure("acme-cert", [HOST], force=True)
        assert down.error is not None and "Connection" in down.error, down
        tier.refresh_certificates()
        assert _served_certificate(https_port, root).serial_number == after.serial_number
        # the status file records the failure for `mesh status`
        assert '"error": "' in (creds / "acme-status.json").read_text()
