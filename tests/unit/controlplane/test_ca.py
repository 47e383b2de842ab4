"""SVIDs look like istiod's: SPIFFE URI SAN (critical), client+server auth, chained to the mesh root."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.controlplane.ca import CertificateAuthority

ID = "spiffe://cluster.local/ns/default/sa/reviews"


def test_svid_carries_the_spiffe_id_and_chains_to_the_root(ca: CertificateAuthority) -> None:
    svid = ca.issue(ID)
    cert = x509.load_pem_x509_certificate(svid.cert_chain_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.UniformResourceIdentifier) == [ID]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca.root)


def test_rotation_issues_a_new_certificate(ca: CertificateAuthority) -> None:
    a = ca.svid(ID)
    assert ca.svid(ID) is a  # cached while fresh
    b = ca.rotate(ID)
    assert b.serial != a.serial and ca.svid(ID) is b


def test_identities_outside_the_trust_domain_are_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="outside trust domain"):
        ca.issue("spiffe://evil.example/ns/default/sa/x")
