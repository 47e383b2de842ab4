""" "External" test hosts for the egress tests: an HTTP(S) server in a namespace of its own on the mesh's bridge,
outside the mesh (no sidecar, no capture), answering with what it saw of the caller. Certificates made here.

Run as a script inside the host's namespace: `python externals.py IP PORT [CERT KEY [CLIENT_CA]]`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mesh.dataplane import netns


class _Echo(BaseHTTPRequestHandler):
    """JSON of the caller's address, the Host it asked for, and the subject of its client certificate (if any)."""

    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        peer = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert()
            subject = [rdn[0] for rdn in cert.get("subject", ())] if cert else []
            peer = next((str(attr[1]) for attr in subject if attr[0] == "commonName"), None)
        body = json.dumps(
            {"client": self.client_address[0], "host": self.headers.get("Host"), "client_cert": peer}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(ip: str, port: int, cert: str = "", key: str = "", client_ca: str = "") -> None:
    server = ThreadingHTTPServer((ip, port), _Echo)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


@contextlib.contextmanager
def external_server(ns: str, ip: str, port: int, *tls: str) -> Iterator[None]:
    """The echo server in namespace `ns`, until the block ends (reaped even on failure)."""
    proc = subprocess.Popen(
        netns.exec_argv(ns, [sys.executable, __file__, ip, str(port), *tls]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not netns.tcp_ready_in(ns, ip, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise AssertionError(f"the external test server {ip}:{port} did not start: {err}")
            time.sleep(0.02)
        yield
    finally:
        proc.kill()
        proc.wait()


# --- certificates -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A test CA and what it signed, as PEM files in one world-readable directory (the proxy user reads the CA)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    secure_cert: Path
    secure_key: Path


def make_pki(directory: Path, server_name: str, other_server: str = "secure.external.test") -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("egress test CA"))
        .issuer_name(name("egress test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, dns: list[str]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), pem_key(key)

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    server = leaf(server_name, ExtendedKeyUsageOID.SERVER_AUTH, [server_name])
    client = leaf("mesh-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    other = leaf(other_server, ExtendedKeyUsageOID.SERVER_AUTH, [other_server])
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "server.crt": server[0],
        "server.key": server[1],
        "client.crt": client[0],
        "client.key": client[1],
        "secure.crt": other[0],
        "secure.key": other[1],
    }
    for f, data in files.items():
        (directory / f).write_bytes(data)
        (directory / f).chmod(0o644)
    d = directory
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "secure.crt",
        d / "secure.key",
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), *sys.argv[3:6])
