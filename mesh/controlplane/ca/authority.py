"""The mesh CA: short-lived workload certificates with a SPIFFE URI SAN (as istiod issues), signed by a self-made root
or a plug-in CA (Istio's `cacerts`), with root rotation through a trust bundle carrying old and new roots.

Rotation is the CA's to decide and the Pilot's to deliver: `svid()` hands out a new certificate once the current one
is past `grace` of its life (Istio rotates at half-life) or was made before a trust change; `next_renewal()` says when
the next one falls due, so a `Rotation` thread pushes just then (see rotation.py). A new serial changes the proxy's
SDS secrets, the push carries them, and Envoy swaps them without closing a connection.

Root rotation in three pushes, each ACKed by every proxy before the next:
  1. `begin_root_rotation(new)`: the trust bundle (ROOTCA) carries the old and the new root; leaves still old-signed.
  2. `switch_signer()`: leaves come from the new signer; every proxy already trusts them.
  3. `finish_root_rotation()`: the old root leaves the bundle.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.api.workloads import CLUSTER_DOMAIN
from mesh.controlplane.ca.signer import Signer, key_usage, self_signed_root


@dataclass(frozen=True)
class SVID:
    """A workload identity document: the leaf cert chain and its key, PEM."""

    spiffe_id: str
    cert_chain_pem: bytes
    key_pem: bytes = field(repr=False)  # never in a log line or a traceback
    not_after: dt.datetime
    serial: int
    not_before: dt.datetime | None = None
    epoch: int = 0  # the CA's trust epoch when issued: a root change makes older SVIDs due


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CertificateAuthority:
    def __init__(
        self,
        trust_domain: str = CLUSTER_DOMAIN,
        root_ttl: dt.timedelta = dt.timedelta(days=365),
        *,
        workload_ttl: dt.timedelta = dt.timedelta(hours=24),
        grace: float = 0.5,
        signer: Signer | None = None,
    ) -> None:
        if not 0 < grace < 1:
            raise ValueError(f"grace {grace} must be between 0 and 1 (the share of a certificate's life used)")
        self.trust_domain = trust_domain
        self.workload_ttl = workload_ttl
        self.grace = grace
        self._signer = signer or self_signed_root(trust_domain, root_ttl)
        self._pending: Signer | None = None
        self._retiring: list[x509.Certificate] = []  # old roots still trusted during a rotation
        self._epoch = 0
        self._lock = threading.Lock()
        self._issued: dict[str, SVID] = {}

    @classmethod
    def from_cacerts(
        cls, directory: Path, trust_domain: str = CLUSTER_DOMAIN, **options: object
    ) -> CertificateAuthority:
        """A plug-in CA from Istio's `cacerts` files, so meshes whose intermediates share a root trust each other."""
        from mesh.controlplane.ca.signer import load_cacerts

        return cls(trust_domain, signer=load_cacerts(directory), **options)  # type: ignore[arg-type]

    # --- trust ------------------------------------------------------------------------------------

    @property
    def signer(self) -> Signer:
        return self._signer

    @property
    def root(self) -> x509.Certificate:
        """The root the current signer chains to."""
        return self._signer.root

    @property
    def roots(self) -> list[x509.Certificate]:
        """Every root proxies must trust now: the current one, a pending one, and ones being retired."""
        out = [self._signer.root]
        if self._pending is not None:
            out.append(self._pending.root)
        out += self._retiring
        unique: dict[bytes, x509.Certificate] = {}
        for r in out:
            unique.setdefault(r.fingerprint(hashes.SHA256()), r)
        return list(unique.values())

    @property
    def root_pem(self) -> bytes:
        """The trust bundle (ROOTCA, and ca.crt for clients): one root, or old and new during a rotation."""
        return b"".join(_pem(r) for r in self.roots)

    def begin_root_rotation(self, new: Signer | None = None) -> Signer:
        """Phase 1: trust the new root beside the old one. Every SVID is due (the bundle travels with them)."""
        with self._lock:
            self._pending = new or self_signed_root(self.trust_domain, dt.timedelta(days=365))
            self._epoch += 1
            return self._pending

    def switch_signer(self) -> None:
        """Phase 2: sign with the new signer; the old root stays trusted until every leaf is replaced."""
        with self._lock:
            if self._pending is None:
                raise RuntimeError("no root rotation in progress: call begin_root_rotation first")
            self._retiring.append(self._signer.root)
            self._signer, self._pending = self._pending, None
            self._epoch += 1

    def finish_root_rotation(self) -> None:
        """Phase 3: the old roots leave the bundle."""
        with self._lock:
            self._retiring.clear()
            self._epoch += 1

    # --- issuing ----------------------------------------------------------------------------------

    def issue(self, spiffe_id: str, ttl: dt.timedelta | None = None, dns_names: tuple[str, ...] = ()) -> SVID:
        """A fresh leaf certificate for `spiffe_id` (URI SAN, critical as SPIFFE requires; client+server auth)."""
        if not spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            raise ValueError(f"{spiffe_id!r} is outside trust domain {self.trust_domain!r}")
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        return self._issue(spiffe_id, sans + [x509.DNSName(d) for d in dns_names], ttl or self.workload_ttl)

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
        with self._lock:
            signer, epoch = self._signer, self._epoch
        now = _now()
        not_after = min(now + ttl, signer.cert.not_valid_after_utc)  # never outlive the signer
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)]))
            .issuer_name(signer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False)
            .sign(signer.key, hashes.SHA256())
        )
        svid = SVID(
            spiffe_id=spiffe_id,
            cert_chain_pem=_pem(cert) + signer.chain_pem,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            epoch=epoch,
        )
        if spiffe_id:
            with self._lock:
                self._issued[spiffe_id] = svid
        return svid

    def _life(self, svid: SVID) -> dt.timedelta:
        return svid.not_after - (svid.not_before or (svid.not_after - self.workload_ttl))

    def renew_at(self, svid: SVID) -> dt.datetime:
        """When an SVID falls due: past `grace` of its life."""
        start = svid.not_before or (svid.not_after - self.workload_ttl)
        return start + (svid.not_after - start) * self.grace

    def svid(self, spiffe_id: str, dns_names: tuple[str, ...] = ()) -> SVID:
        """The current SVID for an identity, issuing anew when it is past its grace or older than a trust change."""
        with self._lock:
            cur, epoch = self._issued.get(spiffe_id), self._epoch
        # renewals close to each other share one push: renew anything within a tenth of its life of falling due
        if cur is not None and cur.epoch == epoch and _now() < self.renew_at(cur) - self._life(cur) * 0.1:
            return cur
        return self.issue(spiffe_id, dns_names=dns_names)

    def rotate(self, spiffe_id: str) -> SVID:
        return self.issue(spiffe_id)

    def next_renewal(self) -> dt.datetime | None:
        """The earliest moment an issued SVID falls due (now, after a trust change); None with nothing issued."""
        with self._lock:
            issued, epoch = list(self._issued.values()), self._epoch
        if not issued:
            return None
        if any(s.epoch != epoch for s in issued):
            return _now()
        return min(self.renew_at(s) for s in issued)

    def issued(self) -> dict[str, SVID]:
        with self._lock:
            return dict(self._issued)
