"""The edge tier on real processes: HAProxy (Debian `haproxy`) in front of real gateway Envoys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.dataplane.addresses import allocate_block
from mesh.edge import EdgeUnavailable, haproxy_binary
from mesh.edge.testing import Gateways, gateways


@pytest.fixture(autouse=True)
def _local_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--mesh") != "local":
        pytest.skip("exercises the local edge tier's own machinery")


@pytest.fixture(scope="module")
def haproxy() -> str:
    """A missing HAProxy fails (not skips) the suite, with the install command."""
    try:
        return haproxy_binary()
    except EdgeUnavailable as e:
        pytest.fail(f"{e}\n(CI installs it with `apt-get install -y haproxy`)")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, haproxy: str) -> Iterator[Gateways]:
    """Three gateway Envoys on a loopback block nobody else uses, behind which one echo upstream answers."""
    block = allocate_block()
    with gateways(tmp_path_factory.mktemp("gateways"), 3, block.b) as gws:
        yield gws


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> Path:
    """A credential `edge-cert` for 127.0.0.1 and `edge.local`, as the local credential store holds them."""
    root = tmp_path_factory.mktemp("credentials")
    cert = ca.issue_server(("edge.local", "localhost"), ip_addresses=("127.0.0.1",))
    d = root / "edge-cert"
    d.mkdir()
    (d / "tls.crt").write_bytes(cert.cert_chain_pem)
    (d / "tls.key").write_bytes(cert.key_pem)
    (root / "ca.crt").write_bytes(ca.root_pem)
    return root
