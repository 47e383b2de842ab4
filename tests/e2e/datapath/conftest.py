"""A mesh under transparent interception (iptables) for this package, whatever `--mesh-interception` says."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from mesh.api.config import MeshConfig
from mesh.dataplane import netns
from mesh.harness.under_test import LocalMeshUnderTest


@pytest.fixture(scope="module")
def captured(mesh_config: MeshConfig, pytestconfig: pytest.Config) -> Iterator[LocalMeshUnderTest]:
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)")
    m = LocalMeshUnderTest(mesh_config, interception="iptables", dns_proxy=pytestconfig.getoption("--mesh-dns-proxy"))
    try:
        yield m
    finally:
        m.stop()


@contextlib.contextmanager
def external_server(m: LocalMeshUnderTest) -> Iterator[str]:
    """An HTTP server (port 8000) in a namespace of its own on the mesh's bridge, outside the mesh (no sidecar, no
    rules): an address the mesh does not know."""
    capture = m.mesh.capture
    assert capture is not None
    ip = capture.net.next_pod_ip()
    ns = capture.net.add_pod(f"external-{ip}", ip, {})
    proc = subprocess.Popen(
        netns.exec_argv(ns, ["python3", "-m", "http.server", "--bind", ip, "8000"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not netns.tcp_ready_in(ns, ip, 8000):
            assert proc.poll() is None and time.monotonic() < deadline, "the external test server did not start"
            time.sleep(0.02)
        yield ip
    finally:
        proc.kill()
        proc.wait()
