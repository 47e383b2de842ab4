"""The edge and the CA wired into a real local mesh (`mesh up --gateway-replicas N --edge haproxy`, the mesh's own
rotation, a plug-in CA): HAProxy under the mesh's supervisor in front of N real gateway Envoys."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from mesh.api import Edge, EdgeListener, Rate, RateLimits
from mesh.api.config import MeshConfig
from mesh.compile import build_policies
from mesh.controlplane.ca import signer
from mesh.dataplane.addresses import allocate_block
from mesh.edge.testing import Load
from mesh.runtime import Pod
from mesh.targets.local import LocalMesh, LocalOptions

pytestmark = pytest.mark.e2e

HOST = {"Host": "bookinfo.local"}


def _mesh(tmp_path: Path, **options: object) -> LocalMesh:
    block = allocate_block()
    opts = LocalOptions(
        state_dir=tmp_path, ingress_host=block.gateway_ip, ingress_port=8080, loopback_block=block.b, **options
    )
    return LocalMesh(build_policies("e2e"), opts, progress=lambda m: None)


@pytest.fixture
def edge_mesh(tmp_path: Path, haproxy: str) -> Iterator[LocalMesh]:
    lm = _mesh(tmp_path, gateway_replicas=3, edge="haproxy")
    try:
        lm.start()
        yield lm
    finally:
        lm.stop()


def _served(lm: LocalMesh, pod: Pod) -> dict[str, str]:
    certs = lm.admin(pod).certs()["certificates"]  # admin is on the proxy's owner-only socket
    return next(c["cert_chain"][0] for c in certs if c.get("cert_chain"))


def _backends_up(lm: LocalMesh, timeout: float = 15.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        info = lm.describe().edge
        assert info is not None
        states = {b.name: b.status for b in info.backends}
        if all(s == "UP" for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.05)


def test_edge_balances_over_gateway_replicas_and_reloads_a_changed_policy_hitlessly(edge_mesh: LocalMesh) -> None:
    lm = edge_mesh
    gateways = [p for p in lm.registry.proxies if p.kind == "router"]
    assert len(gateways) == 3 and len({g.ip for g in gateways}) == 3
    assert any(p.name == "edge/haproxy" and p.running for p in lm.supervisor.status())
    assert _backends_up(lm) == {g.name: "UP" for g in gateways}
    url = f"{lm.edge.url() if lm.edge else ''}/productpage"
    with Load(url, workers=3, headers=HOST) as load:
        load.wait_for(60)
        assert lm.edge is not None
        workers = set(lm.edge.runtime.workers())
        limited = Edge(
            name="public",
            namespace="istio-system",
            listeners=[EdgeListener(name="http", port=8080, address=lm.options.ingress_host)],
            rate_limits=RateLimits(per_host=Rate(requests=100_000, period="1s")),  # never reached here
        )
        lm.apply(MeshConfig(services=list(lm.config.services), resources=[*lm.config.resources, limited]))
        load.wait_for(60)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
    assert not workers & set(lm.edge.runtime.workers())  # a new worker serves: the policy was reloaded
    assert "stick-table" in lm.edge.config_path.read_text()
    for _ in range(30):  # round robin over the replicas, by the new worker
        assert requests.get(url, headers=HOST, timeout=5).status_code == 200
    info = lm.describe().edge
    assert info is not None and info.policy == "Edge istio-system/public"
    served = {b.name: b.requests for b in info.backends}
    assert all(n > 0 for n in served.values()), served  # the new worker balances over every replica
    assert sum(served.values()) > 0


def test_mesh_rotates_workload_certificates_itself_with_a_plug_in_ca(tmp_path: Path) -> None:
    root = signer.self_signed_root("cluster.local", dt.timedelta(days=30))
    cacerts = tmp_path / "cacerts"
    signer.write_cacerts(signer.intermediate(root, "cluster.local", "mesh-a"), cacerts)
    lm = _mesh(tmp_path / "state", ca_dir=cacerts, workload_cert_ttl=4.0)
    try:
        lm.start()
        assert lm.rotation is not None
        first = lm.ca.issued()["spiffe://cluster.local/ns/default/sa/echo"]
        x509.load_pem_x509_certificate(first.cert_chain_pem).verify_directly_issued_by(
            signer.load_cacerts(cacerts).cert
        )
        assert lm.ca.root == root.root
        deadline = time.monotonic() + 3 * 4.0
        while lm.ca.issued()["spiffe://cluster.local/ns/default/sa/echo"].serial == first.serial:
            assert time.monotonic() < deadline, "no renewal within three lifetimes"
            time.sleep(0.1)
        now = lm.ca.issued()["spiffe://cluster.local/ns/default/sa/echo"]
        assert now.not_after <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4.5)  # a 4-second certificate
        pod = next(p for p in lm.registry.pods if p.service == "echo")
        while int(_served(lm, pod)["serial_number"], 16) == first.serial:  # a renewed one reaches it over SDS
            assert time.monotonic() < deadline + 4.0, "the renewed certificate never reached the sidecar"
            time.sleep(0.1)
    finally:
        lm.stop()
