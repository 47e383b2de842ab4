"""`mesh proxy-config secrets` reads validity windows from what Envoy reports (its config dump), keys redacted."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from mesh.cli.proxyconfig import render
from mesh.controlplane.ca import SVID, CertificateAuthority
from mesh.controlplane.ca.inspect import secret_validity


def _dump(ca: CertificateAuthority) -> tuple[dict[str, Any], SVID]:
    svid = ca.issue("spiffe://cluster.local/ns/default/sa/web", ttl=dt.timedelta(hours=1))
    b64 = base64.b64encode
    secrets = [
        {
            "name": "default",
            "version_info": "abcdef0123",
            "secret": {
                "name": "default",
                "tls_certificate": {
                    "certificate_chain": {"inline_bytes": b64(svid.cert_chain_pem).decode()},
                    "private_key": {"inline_bytes": b64(b"[redacted]").decode()},
                },
            },
        },
        {
            "name": "ROOTCA",
            "version_info": "abcdef0123",
            "secret": {
                "name": "ROOTCA",
                "validation_context": {"trusted_ca": {"inline_bytes": b64(ca.root_pem).decode()}},
            },
        },
    ]
    return {
        "configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", "dynamic_active_secrets": secrets}
        ]
    }, svid


def test_validity_windows_of_the_leaf_and_the_trust_bundle() -> None:
    ca = CertificateAuthority()
    dump, svid = _dump(ca)
    leaf, bundle = (secret_validity(s) for s in dump["configs"][0]["dynamic_active_secrets"])
    assert leaf.kind == "Cert Chain" and leaf.valid() and int(leaf.serial, 16) == svid.serial
    assert leaf.not_after == svid.not_after
    assert bundle.kind == "CA" and bundle.certificates == 1 and bundle.not_after == ca.root.not_valid_after_utc
    ca.begin_root_rotation()
    dump2, _ = _dump(ca)
    assert secret_validity(dump2["configs"][0]["dynamic_active_secrets"][1]).certificates == 2
    assert not leaf.valid(now=svid.not_after + dt.timedelta(seconds=1))


def test_proxy_config_secrets_table_shows_the_window() -> None:
    ca = CertificateAuthority()
    dump, svid = _dump(ca)
    text = render("secrets", dump, admin=None)  # type: ignore[arg-type]
    assert "NOT AFTER" in text and "SERIAL NUMBER" in text
    assert svid.not_after.isoformat() in text and "PRIVATE" not in text
