"""What a proxy really holds: validity windows of the certificates in an Envoy secrets config dump.

`mesh proxy-config secrets` shows these columns (as `istioctl proxy-config secret` does): for a certificate chain
the leaf's serial and window, for a trust bundle how many roots and the earliest expiry among them.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509


@dataclass(frozen=True)
class SecretValidity:
    name: str
    kind: str  # "Cert Chain" | "CA" | "" (nothing inline to read)
    serial: str
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    certificates: int

    def valid(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.UTC)
        return self.not_before is not None and self.not_after is not None and self.not_before <= now < self.not_after


def _certs(source: dict[str, Any]) -> list[x509.Certificate]:
    raw = source.get("inline_bytes")
    data = base64.b64decode(raw) if raw else (source.get("inline_string") or "").encode()
    try:
        return x509.load_pem_x509_certificates(data) if data else []
    except ValueError:
        return []


def secret_validity(entry: dict[str, Any]) -> SecretValidity:
    """One entry of `dynamic_active_secrets` (the private key is redacted by Envoy and never read here)."""
    secret = entry.get("secret", {})
    name = entry.get("name") or secret.get("name", "")
    if "tls_certificate" in secret:
        certs = _certs(secret["tls_certificate"].get("certificate_chain", {}))
        if certs:
            leaf = certs[0]
            return SecretValidity(
                name,
                "Cert Chain",
                format(leaf.serial_number, "x"),
                leaf.not_valid_before_utc,
                leaf.not_valid_after_utc,
                len(certs),
            )
        return SecretValidity(name, "Cert Chain", "", None, None, 0)
    if "validation_context" in secret:
        roots = _certs(secret["validation_context"].get("trusted_ca", {}))
        if roots:
            first = min(roots, key=lambda c: c.not_valid_after_utc)
            return SecretValidity(
                name,
                "CA",
                format(first.serial_number, "x"),
                max(c.not_valid_before_utc for c in roots),
                first.not_valid_after_utc,
                len(roots),
            )
        return SecretValidity(name, "CA", "", None, None, 0)
    return SecretValidity(name, "", "", None, None, 0)
