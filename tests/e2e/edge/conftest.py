"""The edge tier on real processes: HAProxy (Debian `haproxy`) in front of real gateway Envoys."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from mesh.api.ratelimit import RATELIMITED_HEADER
from mesh.compile import build_policies
from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.dataplane.addresses import allocate_block
from mesh.dataplane.supervisor import ProcessSpec, Supervisor
from mesh.edge import EdgeUnavailable, haproxy_binary
from mesh.edge.testing import Gateways, free_port, gateways, tcp_ready
from mesh.targets.local import LocalMesh, LocalOptions


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


@dataclass
class Pebble:
    """A running pebble (Let's Encrypt's test ACME server) whose DNS answers 127.0.0.1 for every name."""

    directory_url: str
    management_url: str
    ca_bundle: Path  # trusts pebble's own listener
    http_port: int  # where pebble's validator fetches HTTP-01 answers
    supervisor: Supervisor

    def root_pem(self) -> bytes:
        """The root pebble signs certificates with (regenerated every start; clients of the edge trust it)."""
        r = requests.get(f"{self.management_url}/roots/0", verify=str(self.ca_bundle), timeout=5)
        r.raise_for_status()
        return r.content

    def stop(self) -> None:
        self.supervisor.stop()


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"`{binary}` is not installed: `apt-get install -y {package}` (CI installs it)")
    return path


@pytest.fixture
def acme_http_port() -> int:
    return free_port()


@pytest.fixture
def acme_dns_ip() -> str:
    """The address pebble's DNS gives every name: where its validator fetches HTTP-01 answers."""
    return "127.0.0.1"


@pytest.fixture
def pebble(tmp_path: Path, ca: CertificateAuthority, acme_http_port: int, acme_dns_ip: str) -> Iterator[Pebble]:
    """pebble + pebble-challtestsrv on free loopback ports; nothing listens on 0.0.0.0 or a fixed port."""
    pebble_bin, challtest_bin = _need("pebble", "pebble"), _need("pebble-challtestsrv", "pebble")
    d = tmp_path / "pebble"
    d.mkdir()
    listener = ca.issue_server(("localhost",), ip_addresses=("127.0.0.1",))
    (d / "cert.pem").write_bytes(listener.cert_chain_pem)
    (d / "key.pem").write_bytes(listener.key_pem)
    (d / "ca.pem").write_bytes(ca.root_pem)
    api, mgmt, dns, dns_mgmt = free_port(), free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{api}",
            "managementListenAddress": f"127.0.0.1:{mgmt}",
            "certificate": str(d / "cert.pem"),
            "privateKey": str(d / "key.pem"),
            "httpPort": acme_http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (d / "pebble.json").write_text(json.dumps(config))
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    specs = [
        ProcessSpec(
            name="challtestsrv",
            argv=[
                challtest_bin,
                "-dns01",
                f"127.0.0.1:{dns}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{dns_mgmt}",
                "-defaultIPv4",
                acme_dns_ip,
                "-defaultIPv6",
                "",
            ],
            log_path=d / "challtestsrv.log",
            ready=tcp_ready("127.0.0.1", dns_mgmt),
        ),
        ProcessSpec(
            name="pebble",
            argv=[pebble_bin, "-config", str(d / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
            log_path=d / "pebble.log",
            ready=tcp_ready("127.0.0.1", api),
            env=env,
        ),
    ]
    supervisor = Supervisor(on_event=lambda msg: None)
    supervisor.start(specs, timeout=30)
    try:
        yield Pebble(
            f"https://127.0.0.1:{api}/dir", f"https://127.0.0.1:{mgmt}", d / "ca.pem", acme_http_port, supervisor
        )
    finally:
        supervisor.stop()


@pytest.fixture
def e2e_mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    """A local mesh of the e2e environment of its own (rate-limit tests change its policies and its buckets' state)."""
    block = allocate_block()
    opts = LocalOptions(state_dir=tmp_path, ingress_host=block.gateway_ip, ingress_port=8080, loopback_block=block.b)
    lm = LocalMesh(build_policies("e2e"), opts, progress=lambda m: None)
    try:
        lm.start()
        yield lm
    finally:
        lm.stop()


def burst(url: str, n: int, **headers: str) -> tuple[list[requests.Response], float]:
    """`n` requests one after another to bookinfo.local at `url`: the answers and the seconds they took."""
    session = requests.Session()
    session.trust_env = False
    t0 = time.monotonic()
    out = [session.get(url, headers={"Host": "bookinfo.local", **headers}, timeout=10) for _ in range(n)]
    return out, time.monotonic() - t0


def check_limited(answers: list[requests.Response], took: float, bucket: int, interval: float) -> int:
    """The bucket starts full (its first `bucket` requests pass); refills during the burst add at most `bucket` per
    started interval (+1 for a continuous refill's rounding): a deterministic bound, no statistics. Every answer
    beyond is a 429 with `x-envoy-ratelimited`. Returns the 429s."""
    passed = sum(r.status_code == 200 for r in answers)
    limited = [r for r in answers if r.status_code == 429]
    assert bucket <= passed <= bucket + bucket * math.ceil(took / interval) + 1, (passed, took)
    assert passed + len(limited) == len(answers), [r.status_code for r in answers]
    assert all(r.status_code == 200 for r in answers[:bucket])
    assert all(r.headers.get(RATELIMITED_HEADER) == "true" for r in limited)
    return len(limited)
