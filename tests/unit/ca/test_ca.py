"""The mesh CA: lifetimes and renewal times, plug-in roots that several meshes share, root rotation's trust bundle,
key files kept private and out of logs; credentials re-read when renewed; ACME issuer definitions checked."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.ca.acme import AcmeCertificates, AcmeIssuer
from mesh.controlplane.ca.credentials import CredentialStore
from mesh.controlplane.ca.signer import CacertsError, intermediate, self_signed_root, write_cacerts

ID = "spiffe://cluster.local/ns/default/sa/reviews"


def _chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _verifies(leaf_chain: bytes, bundle: bytes) -> bool:
    """Walk leaf -> intermediates -> one of the bundle's roots, checking each signature."""
    certs = _chain(leaf_chain)
    for child, parent in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    last = certs[-1]
    for root in _chain(bundle):
        try:
            last.verify_directly_issued_by(root)
            return True
        except Exception:
            continue
    return False


def test_workload_certificates_are_short_lived_and_renew_at_half_life() -> None:
    ca = CertificateAuthority(workload_ttl=dt.timedelta(hours=1))
    svid = ca.svid(ID)
    assert svid.not_before is not None
    assert svid.not_after - svid.not_before == dt.timedelta(hours=1, minutes=1)  # backdated a minute for skew
    assert ca.renew_at(svid) == svid.not_before + (svid.not_after - svid.not_before) / 2
    assert ca.svid(ID) is svid and ca.next_renewal() == ca.renew_at(svid)
    assert CertificateAuthority().svid(ID).not_after - dt.datetime.now(dt.UTC) > dt.timedelta(hours=23)  # Istio's 24h


def test_an_svid_past_its_grace_is_replaced() -> None:
    ca = CertificateAuthority(workload_ttl=dt.timedelta(seconds=2), grace=0.5)
    a = ca.svid(ID)
    deadline = time.monotonic() + 5
    while dt.datetime.now(dt.UTC) < ca.renew_at(a):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ca.svid(ID).serial != a.serial


def test_meshes_with_intermediates_under_one_root_trust_each_other(tmp_path: Path) -> None:
    shared = self_signed_root("cluster.local", dt.timedelta(days=30), "shared root")
    east = CertificateAuthority.from_cacerts(
        write_cacerts(intermediate(shared, "cluster.local", "east"), tmp_path / "e")
    )
    west = CertificateAuthority.from_cacerts(
        write_cacerts(intermediate(shared, "cluster.local", "west"), tmp_path / "w")
    )
    leaf = east.issue(ID)
    assert len(_chain(leaf.cert_chain_pem)) == 2  # leaf + east's intermediate; the root travels in ROOTCA
    assert _verifies(leaf.cert_chain_pem, west.root_pem)
    assert not _verifies(leaf.cert_chain_pem, CertificateAuthority().root_pem)
    assert (tmp_path / "e" / "ca-key.pem").stat().st_mode & 0o777 == 0o600


def test_plugin_ca_refuses_a_readable_key_and_a_broken_chain(tmp_path: Path) -> None:
    d = write_cacerts(
        intermediate(self_signed_root("cluster.local", dt.timedelta(days=1)), "cluster.local", "i"), tmp_path
    )
    os.chmod(d / "ca-key.pem", 0o644)
    with pytest.raises(CacertsError, match="readable by others") as e:
        CertificateAuthority.from_cacerts(d)
    assert "chmod 600" in str(e.value) and "PRIVATE KEY" not in str(e.value)
    os.chmod(d / "ca-key.pem", 0o600)
    other = self_signed_root("cluster.local", dt.timedelta(days=1))
    write_cacerts(other, tmp_path / "other")
    (d / "root-cert.pem").write_bytes((tmp_path / "other" / "root-cert.pem").read_bytes())
    with pytest.raises(CacertsError, match="is not signed by"):
        CertificateAuthority.from_cacerts(d)
    (d / "ca-cert.pem").unlink()
    with pytest.raises(CacertsError, match=r"lacks ca-cert\.pem"):
        CertificateAuthority.from_cacerts(d)


def test_keys_never_show_in_reprs() -> None:
    ca = CertificateAuthority()
    assert "PRIVATE KEY" not in repr(ca.svid(ID)) and "key=" not in repr(ca.signer)


def test_root_rotation_trusts_both_roots_while_leaves_change_signer() -> None:
    ca = CertificateAuthority()
    old = ca.root
    before = ca.svid(ID)
    new = ca.begin_root_rotation()
    assert _chain(ca.root_pem) == [old, new.root]
    during = ca.svid(ID)
    assert during.serial != before.serial  # reissued, so the new bundle reaches every proxy with it
    assert _verifies(during.cert_chain_pem, old.public_bytes(Encoding.PEM))
    ca.switch_signer()
    after = ca.svid(ID)
    assert _verifies(after.cert_chain_pem, new.root.public_bytes(Encoding.PEM))
    assert _verifies(before.cert_chain_pem, ca.root_pem)  # old leaves still trusted until the finish
    ca.finish_root_rotation()
    assert _chain(ca.root_pem) == [new.root]
    assert not _verifies(before.cert_chain_pem, ca.root_pem)
    due = ca.next_renewal()
    assert due is not None and due <= dt.datetime.now(dt.UTC)  # due: the trust changed


def test_credential_store_rereads_a_renewed_credential(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    store = CredentialStore(ca, tmp_path)
    d = tmp_path / "web"
    d.mkdir()
    first = ca.issue_server(("web.example",))
    (d / "tls.crt").write_bytes(first.cert_chain_pem)
    (d / "tls.key").write_bytes(first.key_pem)
    assert store.get("web", ("web.example",)).cert_pem == first.cert_chain_pem
    assert store.get("web", ("web.example",)) is store.get("web", ("web.example",))  # cached while unchanged
    second = ca.issue_server(("web.example",))
    (d / "tls.key").write_bytes(second.key_pem)
    (d / ".tls.crt.tmp").write_bytes(second.cert_chain_pem)
    os.replace(d / ".tls.crt.tmp", d / "tls.crt")
    assert store.get("web", ("web.example",)).cert_pem == second.cert_chain_pem


def test_acme_issuer_is_checked_and_due_without_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        AcmeIssuer(name="le", directory_url="http://insecure/dir", account_key=tmp_path / "k")
    with pytest.raises(ValidationError, match="not a duration"):
        AcmeIssuer(name="le", directory_url="https://acme/dir", account_key=tmp_path / "k", renew_before="a month")
    with pytest.raises(ValidationError):
        AcmeIssuer.model_validate({"name": "le", "directoryUrl": "https://x", "account_key": "k", "extra": 1})
    issuer = AcmeIssuer(name="le", directory_url="https://acme/dir", account_key=tmp_path / "k", renew_before="24h")
    certs = AcmeCertificates(issuer, tmp_path, responder=None)  # type: ignore[arg-type]
    assert certs.due("web")
    ca = CertificateAuthority()
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "tls.crt").write_bytes(ca.issue_server(("web",), ttl=dt.timedelta(hours=48)).cert_chain_pem)
    assert not certs.due("web")
    assert certs.due("web", now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=25))
