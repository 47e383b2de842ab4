"""Gateway credentials (what Istio reads from the Secret named by `credentialName`).

Locally a credential is a directory `<credentials dir>/<name>/` with tls.crt, tls.key and (for MUTUAL) ca.crt, as a
Kubernetes TLS Secret holds them. When there is none, the mesh CA issues a server certificate for the server's hosts,
so `curl --cacert .meshops/ca.crt https://...` works with no setup (like mkcert).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from mesh.controlplane.ca.authority import CertificateAuthority

SDS_PREFIX = "kubernetes://"


@dataclass(frozen=True)
class Credential:
    name: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    issued: bool  # True when the mesh CA made it (no files were given)


def credential_secret_name(name: str) -> str:
    return f"{SDS_PREFIX}{name}"


def credential_ca_secret_name(name: str) -> str:
    return f"{SDS_PREFIX}{name}-cacert"


class CredentialStore:
    def __init__(self, ca: CertificateAuthority, directory: Path | None = None) -> None:
        self.ca = ca
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, tuple[str, ...]], Credential] = {}
        self._stamps: dict[tuple[str, tuple[str, ...]], tuple[int, int] | None] = {}

    def get(self, name: str, hosts: tuple[str, ...]) -> Credential:
        """The credential's files when they exist (re-read when tls.crt changes: a renewal reaches the next push),
        else a server certificate from the mesh CA."""
        key = (name, tuple(sorted(hosts)))
        stamp = self._stamp(name)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._stamps.get(key) == stamp:
                return cached
        cred = self._load(name) or self._issue(name, hosts)
        with self._lock:
            self._cache[key] = cred
            self._stamps[key] = stamp
        return cred

    def _stamp(self, name: str) -> tuple[int, int] | None:
        """tls.crt's modification time and inode: a renewal renames a new file into place, changing both."""
        if self.directory is None:
            return None
        try:
            st = (self.directory / name / "tls.crt").stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def _load(self, name: str) -> Credential | None:
        if self.directory is None:
            return None
        d = self.directory / name
        crt, key, ca = d / "tls.crt", d / "tls.key", d / "ca.crt"
        if not (crt.exists() and key.exists()):
            return None
        return Credential(
            name, crt.read_bytes(), key.read_bytes(), ca.read_bytes() if ca.exists() else self.ca.root_pem, False
        )

    def _issue(self, name: str, hosts: tuple[str, ...]) -> Credential:
        dns = tuple(h for h in hosts if h != "*") or ("localhost",)
        cert = self.ca.issue_server(dns)
        return Credential(name, cert.cert_chain_pem, cert.key_pem, self.ca.root_pem, True)


def credential_secrets(cred: Credential) -> list[secret_pb2.Secret]:
    return [
        secret_pb2.Secret(
            name=credential_secret_name(cred.name),
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cred.cert_pem),
                private_key=base_pb2.DataSource(inline_bytes=cred.key_pem),
            ),
        ),
        secret_pb2.Secret(
            name=credential_ca_secret_name(cred.name),
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=cred.ca_pem)
            ),
        ),
    ]
