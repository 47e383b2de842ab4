"""Signing material: a self-made root, or a plug-in CA from Istio's `cacerts` files.

`cacerts` (what `istioctl`'s docs have users create, and istiod reads from the `cacerts` Secret):
  ca-cert.pem     the certificate that signs workload certificates (an intermediate)
  ca-key.pem      its private key: mode 0600, never logged
  root-cert.pem   the root every mesh sharing trust has in common
  cert-chain.pem  ca-cert and any further intermediates up to the root, appended to every leaf
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mesh.errors import PolicyError

CACERTS_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CacertsError(PolicyError):
    """A plug-in CA directory that cannot be used (missing file, loose key permissions, broken chain)."""


@dataclass(frozen=True)
class Signer:
    cert: x509.Certificate  # signs leaves
    key: SigningKey = field(repr=False)
    root: x509.Certificate
    chain_pem: bytes = b""  # appended after each leaf: the signer's cert and intermediates (empty for a root)


def key_usage(*, ca: bool) -> x509.KeyUsage:
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


def _ca_cert(
    subject: x509.Name, key: SigningKey, issuer: x509.Certificate | None, issuer_key: SigningKey, ttl: dt.timedelta
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + ttl, issuer.not_valid_after_utc) if issuer else now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def self_signed_root(trust_domain: str, ttl: dt.timedelta, common_name: str = "meshops root CA") -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_cert(_name(trust_domain, common_name), key, None, key, ttl)
    return Signer(cert=cert, key=key, root=cert)


def intermediate(
    parent: Signer, trust_domain: str, common_name: str, ttl: dt.timedelta = dt.timedelta(days=180)
) -> Signer:
    """A per-mesh intermediate under a shared root: what each mesh's `cacerts` holds when meshes share trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_cert(_name(trust_domain, common_name), key, parent.cert, parent.key, ttl)
    chain = cert.public_bytes(serialization.Encoding.PEM) + parent.chain_pem
    return Signer(cert=cert, key=key, root=parent.root, chain_pem=chain)


def write_cacerts(signer: Signer, directory: Path) -> Path:
    """The four `cacerts` files; the key created 0600 (never readable by others, not even for an instant)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "ca-cert.pem").write_bytes(signer.cert.public_bytes(pem))
    (directory / "root-cert.pem").write_bytes(signer.root.public_bytes(pem))
    (directory / "cert-chain.pem").write_bytes(signer.chain_pem or signer.cert.public_bytes(pem))
    key = signer.key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = directory / "ca-key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.chmod(path, 0o600)
    return directory


def load_cacerts(directory: Path) -> Signer:
    """Read and check a plug-in CA: all four files, a private key only its owner can read, a chain that holds."""
    missing = [f for f in CACERTS_FILES if not (directory / f).exists()]
    if missing:
        raise CacertsError(
            f"plug-in CA {directory} lacks {', '.join(missing)}",
            hint="a cacerts directory holds ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem (as Istio's)",
        )
    key_path = directory / "ca-key.pem"
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise CacertsError(
            f"plug-in CA key {key_path} is readable by others (mode {mode:o})",
            hint=f"chmod 600 {key_path}",
        )
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca-cert.pem").read_bytes())
        root = x509.load_pem_x509_certificate((directory / "root-cert.pem").read_bytes())
        chain = x509.load_pem_x509_certificates((directory / "cert-chain.pem").read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as e:  # the message names the structure, never the key's bytes
        raise CacertsError(f"plug-in CA {directory}: a file does not parse ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CacertsError(f"plug-in CA key {key_path} must be an EC or RSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CacertsError(f"plug-in CA {directory}: ca-key.pem is not the key of ca-cert.pem")
    _check_chain(directory, cert, chain, root)
    if chain and chain[-1].fingerprint(hashes.SHA256()) == root.fingerprint(hashes.SHA256()):
        chain = chain[:-1]  # the root travels in the trust bundle, not after every leaf
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    if cert.fingerprint(hashes.SHA256()) == root.fingerprint(hashes.SHA256()):
        chain_pem = b""  # the plug-in signer is the root itself
    return Signer(cert=cert, key=key, root=root, chain_pem=chain_pem)


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_chain(
    directory: Path, cert: x509.Certificate, chain: list[x509.Certificate], root: x509.Certificate
) -> None:
    links = [cert, *[c for c in chain if c != cert], root]
    for child, parent in itertools.pairwise(links):
        if child == parent:
            continue
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise CacertsError(
                f"plug-in CA {directory}: {child.subject.rfc4514_string()} is not signed by "
                f"{parent.subject.rfc4514_string()} ({type(e).__name__})",
                hint="cert-chain.pem lists ca-cert.pem, then each issuer up to root-cert.pem",
            ) from None
