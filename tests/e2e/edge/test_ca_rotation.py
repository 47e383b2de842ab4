"""Mesh CA rotation on a real local mesh (STRICT mTLS between real Envoys): short-lived workload certificates rotated
over SDS before they expire, and a root rotation through a trust bundle, both under load with no failed request."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from mesh.compile import build_policies
from mesh.dataplane.addresses import allocate_block
from mesh.edge.testing import Load
from mesh.targets.local import LocalMesh, LocalOptions

pytestmark = pytest.mark.e2e

LIFETIME = dt.timedelta(seconds=8)
ECHO = "http://echo:9080/whoami"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    block = allocate_block()
    lm = LocalMesh(
        build_policies("e2e"),
        LocalOptions(
            state_dir=tmp_path,
            ingress_host=block.gateway_ip,
            ingress_port=8080,
            loopback_block=block.b,
            workload_cert_ttl=LIFETIME.total_seconds(),  # the first certificates are already short-lived
        ),
        progress=lambda m: None,
    )
    lm.start()
    try:
        yield lm
    finally:
        lm.stop()


def _proxy_of(lm: LocalMesh, service: str) -> str:
    pod = next(p for p in lm.registry.pods if p.service == service)
    return f"http://{pod.ip}:15001"


def _served_leaf(lm: LocalMesh, service: str) -> dict[str, object]:
    """The workload certificate the service's sidecar really holds (Envoy's /certs), not what we think we sent."""
    pod = next(p for p in lm.registry.pods if p.service == service)
    certs = lm.admin(pod).certs()["certificates"]  # admin is on the proxy's owner-only socket
    chains = [c["cert_chain"][0] for c in certs if c.get("cert_chain")]
    return chains[0]  # type: ignore[no-any-return]


def test_short_lived_certificates_rotate_before_expiry_under_load(mesh: LocalMesh) -> None:
    first = _served_leaf(mesh, "echo")
    rotation = mesh.rotation  # the mesh's own: `mesh up --workload-cert-ttl`
    assert rotation is not None
    pushes = rotation.pushes
    with Load(ECHO, workers=3, proxy=_proxy_of(mesh, "productpage")) as load:
        deadline = time.monotonic() + 2.5 * LIFETIME.total_seconds()  # past two lifetimes of the first certs
        while time.monotonic() < deadline:
            load.wait_for(20)
    # a new connection (a handshake with today's certificates) from a pod that had none to echo
    fresh = Load(ECHO, workers=1, proxy=_proxy_of(mesh, "reviews"))
    with fresh:
        fresh.wait_for(5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
    assert fresh.result.failed == 0, (fresh.result.statuses, fresh.result.errors[:5])
    assert load.result.total > 100
    assert rotation.pushes - pushes >= 4  # every identity rotated at half-life, at least four times in 2.5 lifetimes
    now = _served_leaf(mesh, "echo")
    assert now["serial_number"] != first["serial_number"]
    assert int(str(now["days_until_expiration"])) == 0  # still short-lived


def test_root_rotation_under_load_fails_no_request(mesh: LocalMesh) -> None:
    mesh.ca.workload_ttl = dt.timedelta(hours=24)  # only the root changes here
    old_root = mesh.ca.root
    with Load(ECHO, workers=3, proxy=_proxy_of(mesh, "productpage")) as load:
        load.wait_for(50)
        new = mesh.ca.begin_root_rotation()
        assert len(mesh.ca.roots) == 2
        mesh.pilot.push(mesh.config, wait=10)
        load.wait_for(50)
        mesh.ca.switch_signer()
        mesh.pilot.push(mesh.config, wait=10)
        load.wait_for(50)
        mesh.ca.finish_root_rotation()
        mesh.pilot.push(mesh.config, wait=10)
        load.wait_for(50)
    fresh = Load(ECHO, workers=1, proxy=_proxy_of(mesh, "reviews"))
    with fresh:
        fresh.wait_for(5)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
    assert fresh.result.failed == 0, (fresh.result.statuses, fresh.result.errors[:5])
    assert mesh.ca.roots == [new.root] and new.root != old_root
    leaf = mesh.ca.issued()["spiffe://cluster.local/ns/default/sa/echo"]
    x509.load_pem_x509_certificate(leaf.cert_chain_pem).verify_directly_issued_by(new.root)
    assert int(str(_served_leaf(mesh, "echo")["serial_number"]), 16) == leaf.serial
