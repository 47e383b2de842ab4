"""Gateway credentials from an ACME issuer (Let's Encrypt's protocol), with certbot's `acme` library.

An `AcmeIssuer` names the directory URL and the account; `AcmeCertificates` keeps one credential per name current:
it orders a certificate for the credential's hosts, answers the HTTP-01 challenge through a `ChallengeResponder`
(locally the edge serves `/.well-known/acme-challenge/<token>` on its plain-HTTP listeners, as cert-manager's solver
is reached through the ingress), and writes the result where every credential lives: `<dir>/<name>/tls.crt`,
`tls.key` (0600) and `ca.crt`. From there the credential store pushes it over SDS as `kubernetes://<name>` and the
edge loads it for its TLS listeners.

A certificate is renewed once less than `renew_before` of its life is left. A failed order (server down, challenge
failing, rate-limited) leaves the previous files untouched, so the previous certificate keeps serving, and is
recorded in the status file (`acme-status.json`) that `mesh status` can show.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mesh.api._base import parse_duration
from mesh.errors import TargetError

log = logging.getLogger("mesh.acme")

USER_AGENT = "meshops-acme"


class AcmeError(TargetError):
    """An order failed; the previous certificate (if any) keeps serving."""


class AcmeIssuer(BaseModel):
    """Where certificates come from (cert-manager's `Issuer` with an `acme` block, reduced to what we use)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    directory_url: str = Field(pattern=r"^https://")
    email: str | None = None
    account_key: Path  # PEM; generated (0600) on first use
    ca_bundle: Path | None = None  # trust for the ACME server's own TLS; the system's when None
    challenge: Literal["http-01"] = "http-01"
    renew_before: str = "720h"  # 30 days, as cert-manager renews 90-day certificates
    timeout: str = "90s"
    retry_interval: str = "30s"  # after a failed order (see acme_renewal.py)

    @field_validator("renew_before", "timeout", "retry_interval")
    @classmethod
    def _durations(cls, v: str) -> str:
        parse_duration(v)
        return v


class ChallengeResponder(Protocol):
    """Serves `key_authorization` at `http://<host>/.well-known/acme-challenge/<token>` until cleaned up."""

    def present(self, token: str, key_authorization: str) -> None: ...

    def cleanup(self, token: str) -> None: ...


@dataclass
class CertificateStatus:
    """One credential's ACME state, as `mesh status` shows it (fluxcd-style: last attempt vs last success)."""

    name: str
    hosts: list[str]
    ready: bool = False
    not_before: str | None = None
    not_after: str | None = None
    renew_after: str | None = None
    last_attempt: str | None = None
    last_success: str | None = None
    error: str | None = None
    issued: int = 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _replace(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write beside, then rename: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    if private:
        _write_private(tmp, data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


class AcmeCertificates:
    def __init__(
        self,
        issuer: AcmeIssuer,
        credentials_dir: Path,
        responder: ChallengeResponder,
        status_path: Path | None = None,
    ) -> None:
        self.issuer = issuer
        self.credentials_dir = credentials_dir
        self.responder = responder
        self.status_path = status_path or credentials_dir / "acme-status.json"
        self._lock = threading.Lock()
        self._client: client.ClientV2 | None = None
        self._status: dict[str, CertificateStatus] = self._load_status()

    # --- the account ------------------------------------------------------------------------------

    def _account_key(self) -> JWKRSA:
        path = self.issuer.account_key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_private(
                path,
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise AcmeError(f"account key {path} is not an RSA key", hint="remove it to have a new one generated")
        return JWKRSA(key=loaded)

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        verify: bool | str = str(self.issuer.ca_bundle) if self.issuer.ca_bundle else True
        key = self._account_key()
        # requests takes a CA bundle path where `verify_ssl` takes a bool
        net = client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify)  # type: ignore[arg-type]
        directory = client.ClientV2.get_directory(self.issuer.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.issuer.email, terms_of_service_agreed=True, only_return_existing=False
        )
        try:
            net.account = acme.new_account(registration)
        except acme_errors.ConflictError as e:  # the key already has an account: use it
            net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        self._client = acme
        return acme

    # --- certificates -----------------------------------------------------------------------------

    def status(self, name: str) -> CertificateStatus | None:
        with self._lock:
            return self._status.get(name)

    def due(self, name: str, now: dt.datetime | None = None) -> bool:
        """No certificate yet, or less than `renew_before` of its life left."""
        cert = self._current(name)
        if cert is None:
            return True
        left = cert.not_valid_after_utc - (now or _now())
        return left <= dt.timedelta(seconds=parse_duration(self.issuer.renew_before))

    def ensure(self, name: str, hosts: list[str], *, force: bool = False) -> CertificateStatus:
        """Obtain or renew when due (or forced). Never raises for ACME failures: they are recorded in the status
        and the previous certificate stays in place."""
        st = self.status(name) or CertificateStatus(name=name, hosts=list(hosts))
        st.hosts = list(hosts)
        if not force and not self.due(name) and sorted(self._hosts(name)) == sorted(hosts):
            return st
        st.last_attempt = _now().isoformat()
        try:
            self._order(name, hosts)
        except Exception as e:  # every failure of an order leaves the old certificate serving
            st.error = f"{type(e).__name__}: {e}"
            log.warning("ACME order for credential %s failed: %s", name, st.error)
        else:
            st.error = None
            st.issued += 1
            st.last_success = _now().isoformat()
        cert = self._current(name)
        st.ready = cert is not None and cert.not_valid_after_utc > _now()
        if cert is not None:
            st.not_before = cert.not_valid_before_utc.isoformat()
            st.not_after = cert.not_valid_after_utc.isoformat()
            renew = cert.not_valid_after_utc - dt.timedelta(seconds=parse_duration(self.issuer.renew_before))
            st.renew_after = max(renew, cert.not_valid_before_utc).isoformat()
        with self._lock:
            self._status[name] = st
            self._save_status()
        return st

    def _order(self, name: str, hosts: list[str]) -> None:
        acme = self._connect()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        order = acme.new_order(crypto_util.make_csr(key_pem, hosts))
        deadline = dt.datetime.now() + dt.timedelta(seconds=parse_duration(self.issuer.timeout))
        presented = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the server reuses a recent authorization for this account
                challenge = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if challenge is None:
                    raise AcmeError(f"the ACME server offers no http-01 challenge for {authz.body.identifier.value}")
                response, validation = challenge.response_and_validation(acme.net.key)
                self.responder.present(challenge.chall.encode("token"), validation)
                presented.append(challenge.chall.encode("token"))
                acme.answer_challenge(challenge, response)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for token in presented:
                self.responder.cleanup(token)
        self._store(name, order.fullchain_pem.encode(), key_pem)

    def _store(self, name: str, fullchain: bytes, key_pem: bytes) -> None:
        """Key first, then the chain: the pair only ever mismatches for the instant between two renames, and
        readers load a credential when tls.crt changes (the credential store's mtime check)."""
        d = self.credentials_dir / name
        d.mkdir(parents=True, exist_ok=True)
        chain = x509.load_pem_x509_certificates(fullchain)
        _replace(d / "tls.key", key_pem, private=True)
        _replace(d / "ca.crt", chain[-1].public_bytes(serialization.Encoding.PEM))
        _replace(d / "tls.crt", fullchain)

    def _current(self, name: str) -> x509.Certificate | None:
        path = self.credentials_dir / name / "tls.crt"
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            return None

    def _hosts(self, name: str) -> list[str]:
        cert = self._current(name)
        if cert is None:
            return []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(n) for n in san.get_values_for_type(x509.DNSName)]

    # --- status file ------------------------------------------------------------------------------

    def _load_status(self) -> dict[str, CertificateStatus]:
        try:
            raw = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: CertificateStatus(**fields) for name, fields in raw.get("certificates", {}).items()}

    def _save_status(self) -> None:
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        data = {"issuer": self.issuer.name, "certificates": {n: asdict(s) for n, s in sorted(self._status.items())}}
        _replace(self.status_path, (json.dumps(data, indent=2) + "\n").encode())
