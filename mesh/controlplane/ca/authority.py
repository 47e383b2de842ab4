"""A small mesh CA: EC P-256 root, short-lived workload certificates with a SPIFFE URI SAN (as istiod issues)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.api.workloads import CLUSTER_DOMAIN


@dataclass(frozen=True)
class SVID:
    """A workload identity document: the leaf cert chain and its key, PEM."""

    spiffe_id: str
    cert_chain_pem: bytes
    key_pem: bytes
    not_after: dt.datetime
    serial: int


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """CA: sign certificates and CRLs. Leaf: sign and (RSA-style) encipher keys, as istiod's workload certs."""
    return x509.KeyUsage(
        digital_signature=True,
        key_encipherment=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    def __init__(self, trust_domain: str = CLUSTER_DOMAIN, root_ttl: dt.timedelta = dt.timedelta(days=365)) -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshops root CA"),
            ]
        )
        now = _now()
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + root_ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM)
        self._lock = threading.Lock()
        self._issued: dict[str, SVID] = {}

    def issue(
        self, spiffe_id: str, ttl: dt.timedelta = dt.timedelta(hours=24), dns_names: tuple[str, ...] = ()
    ) -> SVID:
        """A fresh leaf certificate for `spiffe_id` (URI SAN, critical as SPIFFE requires; client+server auth)."""
        if not spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            raise ValueError(f"{spiffe_id!r} is outside trust domain {self.trust_domain!r}")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        return self._issue(spiffe_id, sans + [x509.DNSName(d) for d in dns_names], ttl)

    def issue_server(
        self, dns_names: tuple[str, ...], ttl: dt.timedelta = dt.timedelta(days=30), ip_addresses: tuple[str, ...] = ()
    ) -> SVID:
        """A server certificate for gateway hosts (DNS SANs, and IP SANs for listeners reached by address):
        the local stand-in for a credentialName Secret."""
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        return self._issue("", sans, ttl)

    def _issue(self, spiffe_id: str, sans: list[x509.GeneralName], ttl: dt.timedelta) -> SVID:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)]))
            .issuer_name(self.root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + ttl)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        svid = SVID(
            spiffe_id=spiffe_id,
            cert_chain_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
        )
        if spiffe_id:
            with self._lock:
                self._issued[spiffe_id] = svid
        return svid

    def svid(self, spiffe_id: str, dns_names: tuple[str, ...] = ()) -> SVID:
        """The current SVID for an identity, issuing (or renewing past half-life) as needed."""
        with self._lock:
            cur = self._issued.get(spiffe_id)
        if cur is not None and cur.not_after - _now() > dt.timedelta(hours=12):
            return cur
        return self.issue(spiffe_id, dns_names=dns_names)

    def rotate(self, spiffe_id: str) -> SVID:
        return self.issue(spiffe_id)
